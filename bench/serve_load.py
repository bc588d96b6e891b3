"""Throughput with vs without `@serve.batch`, and a 1,000-request soak at 16 concurrent clients.

    python -m bench.serve_load [--squad squad-v1.1-dev-part-a.json]

(1) requests/s of /v1/rag at 16 concurrent clients, batching on (max_batch_size 16) vs off
(max_batch_size 1); target >= 3x. (2) 1,000 requests at 16 concurrent clients on the batched
application: zero 5xx, p50/p95/p99 latency. The batched arm waits up to `--batch-wait-s` for a
batch to fill; the shipped config waits 0 s (a lone request pays no wait).
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

CLIENTS, NEW_TOKENS, WARMUP_ROUNDS = 16, 16, 2


async def _run(url: str, questions: list[str], requests: int) -> tuple[float, list[float], dict[int, int]]:
    """(wall seconds, per-request latencies, status counts) for `requests` requests by CLIENTS clients."""
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(questions[i % len(questions)])
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            question = queue.get_nowait()
            start = time.perf_counter()
            try:
                response = await http.post("/v1/rag", json={"question": question, "top_k": 5,
                                                            "max_new_tokens": NEW_TOKENS})
                status = response.status_code
            except httpx.HTTPError:
                status = 599  # transport failure counts as a server error
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
        return time.perf_counter() - start, latencies, statuses


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(
    squad: Annotated[Optional[str], typer.Option(help="SQuAD v1.1 JSON for documents/questions "
                                                      "(default $CLARA_SQUAD_JSON, else synthetic text).")] = None,
    throughput_requests: Annotated[int, typer.Option(help="Requests per throughput run.")] = 96,
    soak_requests: Annotated[int, typer.Option(help="Requests in the soak run.")] = 1000,
    num_docs: Annotated[int, typer.Option(help="Documents in the store.")] = 64,
    # 2 (README figures): batched prefill is compute-bound and scales with threads (1.75 vs 1.26 req/s
    # with 1); one request at a time, one thread is faster (0.63 vs 0.54 req/s unbatched), hence
    # the 1 of serve/config.yaml.
    torch_threads: Annotated[int, typer.Option(help="torch threads per replica, both arms")] = 2,
    # The 16 clients' next requests reach the Retriever over ~0.1 s after a batch returns. With a
    # shorter wait the first few split off into a batch of their own, the Generator then decodes
    # two batches (3 + 13) per round, and the split never heals: 2.7-2.8x at 0.02 s, 3.5-3.6x at 0.15 s.
    batch_wait_s: Annotated[float, typer.Option(help="batch_wait_timeout_s of the batched arm")] = 0.15,
) -> None:
    from bench.serving_setup import build_assets, deploy, start_serve, stop_serve

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, store, questions = build_assets(Path(tmp), squad, num_docs)
        url = start_serve()
        rates = {}
        try:
            for label, batch in (("no batching", 1), ("batching", 16)):
                deploy(url, f"clara_{batch}", torch_threads, checkpoint=checkpoint, store=store,
                       batch={"max_batch_size": batch, "batch_wait_timeout_s": batch_wait_s})
                # Warm-up: a fresh replica's first batches pay one-off allocation for their shapes.
                asyncio.run(_run(url, questions, WARMUP_ROUNDS * CLIENTS))
                seconds, _, statuses = asyncio.run(_run(url, questions, throughput_requests))
                rates[label] = throughput_requests / seconds
                print(f"{label:12s} {rates[label]:.2f} req/s  ({throughput_requests} requests, statuses {statuses})")
            seconds, latencies, statuses = asyncio.run(_run(url, questions, soak_requests))
        finally:
            stop_serve()
    print(f"batching speed-up {rates['batching'] / rates['no batching']:.1f}x at {CLIENTS} clients (target >= 3x)")
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    print(f"soak: {soak_requests} requests at {CLIENTS} clients in {seconds:.0f} s "
          f"({soak_requests / seconds:.2f} req/s), statuses {statuses}, 5xx={server_errors}")
    print(f"latency p50={_percentile(latencies, 50):.2f}s p95={_percentile(latencies, 95):.2f}s "
          f"p99={_percentile(latencies, 99):.2f}s")


if __name__ == "__main__":
    typer.run(main)
