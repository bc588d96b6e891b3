"""Compression throughput of the precompress Ray job vs a bare batched loop over compress_documents.

    python -m bench.precompress_throughput [--backbone smollm2-135m] [--docs 512] [--batch-size 16]

Both compress the same documents with the same checkpoint and batch size on the same cores (the
bare loop with one torch thread per core, the job with its default CPU layout of one single-thread
actor per core, since independent processes scale better here than threads of one), starting
from the checkpoint on disk: the bare loop is timed from its model load (its rate once loaded is
printed too); the Ray job is timed end to end (`run_precompress`:
corpus read, actor start and model load, compression, shard writes, index publish), with the Ray
cluster already running, so the ratio charges the job for everything it does. Target: >= 0.9.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

WORDS = ("river", "harbour", "market", "council", "bridge", "railway", "festival", "library", "mill", "canal")


def make_docs(count: int) -> list[str]:
    """Paragraph-sized documents (~100-200 tokens) with varied content."""
    return [" ".join(f"The {WORDS[(i + j) % 10]} of town {i} was rebuilt in {1800 + (i * j) % 200}."
                     for j in range(12)) for i in range(count)]


def main(
    backbone: Annotated[str, typer.Option(help="tiny-random | smollm2-135m | HF dir")] = "smollm2-135m",
    docs: Annotated[int, typer.Option(help="documents compressed by each side")] = 512,
    batch_size: Annotated[int, typer.Option()] = 16,
    compression_rate: Annotated[int, typer.Option()] = 32,
    threads: Annotated[int, typer.Option(help="torch threads of the bare loop (all cores)")] = 2,
    actors: Annotated[int, typer.Option(help="compressor actors of the Ray job")] = 2,
    actor_threads: Annotated[int, typer.Option(help="torch threads per actor")] = 1,
) -> None:
    """Print docs/s of the bare loop and the Ray job, and their ratio."""
    import ray
    import torch

    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.store.job import PrecompressConfig, run_precompress

    work = Path(tempfile.mkdtemp(prefix="clara_bench_precompress_"))
    try:
        torch.set_num_threads(threads)
        model = CLaRa.from_config(CLaRaConfig(backbone=backbone, compression_rate=compression_rate,
                                              doc_max_length=256), device="cpu")
        model.save_pretrained(work / "ckpt")
        texts = make_docs(docs)
        with (work / "corpus.jsonl").open("w") as fh:
            for i, text in enumerate(texts):
                fh.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")

        del model
        # Both sides start from the checkpoint on disk: the bare loop pays its model load and
        # first-batch warm-up too, as the job's actor does.
        start = time.perf_counter()
        model = CLaRa.from_pretrained(work / "ckpt", device="cpu").eval()
        model.merge_adapter("compressor")  # as the job's actors do
        loaded = time.perf_counter()
        for lo in range(0, docs, batch_size):
            model.compress_documents(texts[lo:lo + batch_size])
        end = time.perf_counter()
        bare, bare_steady = docs / (end - start), docs / (end - loaded)
        del model

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cfg = PrecompressConfig(batch_size=batch_size, shard_size=1024, actors=actors, num_cpus_per_actor=0.5,
                                torch_threads=actor_threads)
        start = time.perf_counter()
        summary = run_precompress(work / "ckpt", work / "corpus.jsonl", work / "store", cfg)
        job = docs / (time.perf_counter() - start)
        assert summary["new_docs"] == docs, summary
        print(f"backbone {backbone}, {docs} docs, batch {batch_size}; bare loop: {threads} torch threads; "
              f"Ray job: {actors} actors x {actor_threads} threads")
        print(f"bare batched loop: {bare:.2f} docs/s from the checkpoint on disk "
              f"({bare_steady:.2f} docs/s once loaded) | Ray job (end to end): {job:.2f} docs/s")
        print(f"ratio Ray job / bare loop: {job / bare:.2f} (target >= 0.9); "
              f"vs the bare loop's loaded-model rate: {job / bare_steady:.2f}")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
