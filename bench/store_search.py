"""Search latency and recall of a store vs exact search, on synthetic memory-token vectors.

    python -m bench.store_search --sizes 100000,1000000 [--kind ivfpq] [--workdir /tmp/clara_bench]

Per size: writes a real store (fp16 shards + Parquet + FAISS index, through StoreWriter), opens it
with CompressedStore, times single-query `store.search(q, 5)` (ANN + exact fp16 re-rank + metadata
+ vector gather), and compares its top-5 with exact brute force over the fp16 shards, which is also
the latency baseline. Vectors: 8 memory tokens x 576 (SmolLM2-135M), i.e. 4608 dims; see
clara_ray/store/synthetic.py for why they are low-rank + topics rather than i.i.d. noise.
"""
from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

SHAPE = (8, 576)
CHUNK = 8192


def _identity():
    from clara_ray.store import CheckpointIdentity

    return CheckpointIdentity(fingerprint="synthetic", backbone="smollm2-135m", compression_rate=32,
                              num_memory_tokens=SHAPE[0], hidden_size=SHAPE[1], path="synthetic")


def build_store(root: Path, size: int, cfg) -> float:
    from clara_ray.store import DocRecord, StoreWriter
    from clara_ray.store.synthetic import synthetic_docs

    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    with StoreWriter(root, _identity(), cfg) as writer:
        for chunk, lo in enumerate(range(0, size, CHUNK)):
            count = min(CHUNK, size - lo)
            vectors = synthetic_docs(count, SHAPE, chunk_seed=chunk, topics=max(10, size // 100))
            writer.add(vectors, [DocRecord(id=f"doc-{lo + i}", text=f"synthetic document {lo + i}") for i in range(count)])
        writer.publish()
    return time.perf_counter() - start


def exact_top(store, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Brute force over every fp16 shard (the ground truth), and its time per query."""
    start = time.perf_counter()
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    for lo in range(0, len(store), CHUNK):
        block = store.shards.exact(np.arange(lo, min(lo + CHUNK, len(store))))
        scores = queries @ block.T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_rows = np.concatenate([best_rows, np.arange(lo, lo + len(block))[None].repeat(len(queries), 0)], axis=1)
        top = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_rows = np.take_along_axis(merged_rows, top, axis=1)
    return best_rows, (time.perf_counter() - start) / len(queries)


def bench_size(root: Path, size: int, cfg, num_queries: int) -> dict:
    from clara_ray.store import CompressedStore, normalize
    from clara_ray.store.synthetic import noisy_queries, synthetic_docs

    build_s = build_store(root, size, cfg)
    store = CompressedStore.open(root, verify=False)
    # queries near docs of the first chunk (same generator, so their rows are known)
    seed_docs = synthetic_docs(min(CHUNK, size), SHAPE, chunk_seed=0, topics=max(10, size // 100))
    queries, _ = noisy_queries(seed_docs, num_queries, seed=1)
    queries = normalize(queries)
    store.search(queries[:5], 5)  # warm up
    latencies, ann_rows = [], []
    for q in queries:
        start = time.perf_counter()
        hits = store.search(q[None], 5)
        latencies.append(time.perf_counter() - start)
        ann_rows.append(hits.ids[0])
    id_to_row = {doc_id: row for row, doc_id in enumerate(store.ids)}
    ann = np.array([[id_to_row[i] for i in ids] for ids in ann_rows])
    exact, exact_s = exact_top(store, queries, 5)
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(ann, exact)])
    same = np.mean([set(a) == set(e) for a, e in zip(ann, exact)])
    index_file = store.version_dir / store.manifest.index.file
    shard_bytes = sum(p.stat().st_size for p in (root / "shards").rglob("*.npy"))
    return dict(size=size, kind=store.manifest.index.kind, params=store.manifest.index.params,
                build_s=build_s, p50_ms=1e3 * np.percentile(latencies, 50), p95_ms=1e3 * np.percentile(latencies, 95),
                exact_ms=1e3 * exact_s, recall5=recall, same_top5=same,
                index_mb=index_file.stat().st_size / 2**20, shards_mb=shard_bytes / 2**20)


def main(
    sizes: Annotated[str, typer.Option(help="comma-separated corpus sizes")] = "100000,1000000",
    kind: Annotated[str, typer.Option(help="auto | flat | hnsw | ivfpq")] = "ivfpq",
    queries: Annotated[int, typer.Option(help="queries per size")] = 200,
    workdir: Annotated[Path, typer.Option(help="where the stores are written (~9 KB per doc)")] = Path("/tmp/clara_bench_store"),
    keep: Annotated[bool, typer.Option(help="keep the stores afterwards")] = False,
) -> None:
    """Print p50/p95 latency, recall@5 vs exact, and the speed-up over exact search per size."""
    from clara_ray.store import IndexConfig

    cfg = IndexConfig(kind=kind)
    for size in [int(s) for s in sizes.split(",")]:
        root = workdir / f"n{size}"
        r = bench_size(root, size, cfg, queries)
        rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"N={r['size']:>8} {r['kind']} {r['params']}\n"
              f"  build {r['build_s']:.0f}s | search p50 {r['p50_ms']:.2f} ms p95 {r['p95_ms']:.2f} ms | "
              f"exact {r['exact_ms']:.1f} ms/query | speed-up x{r['exact_ms'] / r['p50_ms']:.1f} | "
              f"recall@5 {r['recall5']:.3f} | same top-5 {r['same_top5']:.3f} | "
              f"index {r['index_mb']:.0f} MB, shards {r['shards_mb']:.0f} MB on disk, peak RSS {rss_gb:.1f} GB",
              flush=True)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
