"""Latency of the CLaRa endpoint vs a text-RAG endpoint on the same backbone and documents.

    python -m bench.serve_latency [--squad squad-v1.1-dev-part-a.json]

Both endpoints are the same Serve application: `reader: compressed` feeds the generator k=5
retrieved documents as 8 memory vectors each; `reader: text` feeds the same 5 documents as text.
Time to first token = latency of a 1-token answer (retrieval + prefill + first decode step, over
HTTP); total = latency of an answer of up to 16 new tokens. Targets: >= 10x TTFT, >= 3x total.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import typer


def _latency(http, question: str, new_tokens: int) -> tuple[float, dict]:
    """(client-side seconds, response body with the server's retrieve/generate timings)."""
    start = time.perf_counter()
    response = http.post("/v1/rag", json={"question": question, "top_k": 5, "max_new_tokens": new_tokens})
    response.raise_for_status()
    return time.perf_counter() - start, response.json()


def _streamed_ttft(http, question: str) -> float:
    """Time to the first content chunk of a streamed chat completion."""
    start = time.perf_counter()
    body = {"model": "clara", "stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": question}]}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                return time.perf_counter() - start
    return time.perf_counter() - start


def measure(url: str, questions: list[str], tokenizer, stream: bool) -> dict:
    import httpx

    # One keep-alive connection, as the openai client holds one: a new client per request would
    # add its own set-up (~35 ms here) to both endpoints' latencies.
    with httpx.Client(base_url=url, timeout=300) as http:
        for q in questions[:2]:  # warm-up: first calls pay lazy initialisation
            _latency(http, q, 2)
        first = [_latency(http, q, 1) for q in questions]
        totals, lengths = [], []
        for q in questions:
            seconds, body = _latency(http, q, 16)
            totals.append(seconds)
            lengths.append(len(tokenizer(body["answer"], add_special_tokens=False)["input_ids"]))
        streamed = [_streamed_ttft(http, q) for q in questions] if stream else None
    out = {"ttft_s": statistics.median(s for s, _ in first), "total_s": statistics.median(totals),
           "mean_answer_tokens": statistics.mean(lengths),
           # Server-side split of the 1-token requests: both readers pay the same retrieval
           # (query-reasoner encode + search); prefill is where reading vectors vs text differs.
           "retrieve_s": statistics.median(b["timings"]["retrieve_s"] for _, b in first),
           "first_token_generate_s": statistics.median(b["timings"]["generate_s"] for _, b in first)}
    if streamed:
        out["streamed_ttft_s"] = statistics.median(streamed)
    return out


def _report(name: str, row: dict) -> dict:
    print(f"  {name:20s} " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    return row


def main(
    squad: Annotated[Optional[str], typer.Option(help="SQuAD v1.1 JSON for documents/questions "
                                                      "(default $CLARA_SQUAD_JSON, else synthetic text).")] = None,
    questions: Annotated[int, typer.Option(help="Measured questions per endpoint.")] = 10,
    num_docs: Annotated[int, typer.Option(help="Documents in the store.")] = 64,
    torch_threads: Annotated[int, typer.Option(help="torch threads per replica (serve/config.yaml: 1)")] = 1,
) -> None:
    from transformers import AutoTokenizer

    from bench.serving_setup import BACKBONE, build_assets, deploy, start_serve, stop_serve
    from clara_ray.backbones import resolve_backbone

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, store, all_questions = build_assets(Path(tmp), squad, num_docs)
        asked = all_questions[:questions]
        tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(BACKBONE))
        url = start_serve()
        try:
            print(f"SmolLM2-135M, k=5 docs x 256 tokens, compression rate 32, {questions} questions, medians, "
                  f"{torch_threads} torch thread(s) per replica")
            deploy(url, "clara", torch_threads, checkpoint=checkpoint, store=store, reader="compressed")
            clara = _report("clara (compressed)", measure(url, asked, tokenizer, stream=True))
            deploy(url, "text_rag", torch_threads, checkpoint=checkpoint, store=store, reader="text")
            text = _report("text-RAG", measure(url, asked, tokenizer, stream=False))
        finally:
            stop_serve()
    print(f"TTFT speed-up   {text['ttft_s'] / clara['ttft_s']:.1f}x  (target >= 10x)")
    print(f"total speed-up  {text['total_s'] / clara['total_s']:.1f}x  (target >= 3x, <= 16 new tokens)")
    print(f"generator first-token speed-up (server side, retrieval excluded) "
          f"{text['first_token_generate_s'] / clara['first_token_generate_s']:.1f}x")


if __name__ == "__main__":
    typer.run(main)
