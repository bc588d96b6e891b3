"""FAISS index over L2-normalised flattened (n*hidden) vectors: cosine = inner product (docs/design.md section 4).

Kinds: `flat` (exact IndexFlatIP), `hnsw` (IndexHNSWFlat, inner product) and `ivfpq` (optionally
PCA-reduced IVF-PQ whose candidates are re-ranked with the exact vectors). Full-vector kinds hold
n*dim*4 bytes in RAM; IVF-PQ holds only its codes (pq_m bytes per doc), so it is the default for
large corpora, where exact scores come from the fp16 shards instead.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
from pydantic import BaseModel, Field

from clara_ray.store.errors import StoreError

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw", "ivfpq"]
ExactVectors = Callable[[np.ndarray], np.ndarray]  # rows -> normalised fp32 (len(rows), dim)


class IndexConfig(BaseModel):
    kind: Literal["auto", "flat", "hnsw", "ivfpq"] = "auto"
    # auto: flat up to flat_max_docs; hnsw while its full vectors fit hnsw_max_bytes; else ivfpq
    flat_max_docs: int = 20_000
    hnsw_max_bytes: int = 4 << 30
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None  # default ~4*sqrt(N), at least 39 training points per list
    ivf_nprobe: int = 48
    pq_m: int | None = None  # sub-quantizers; default the largest divisor of the dim <= 64
    pq_nbits: int = 8
    reduce_dim: int | None = None  # PCA before IVF-PQ; default 256 when dim > 1024, 0 = off
    train_size: int = 65_536
    # Rows the PCA trains on (a random subset of the training sample); default min(train_size, 16 * reduce_dim,
    # dim - 1). Under dim rows FAISS's PCA eigendecomposes the rows x rows Gram matrix; from dim rows up,
    # the dim x dim covariance: at dim = n*hidden = 32,768 (a 7B backbone) 4 GiB plus an 8 GiB float64
    # copy and an O(dim^3) eigendecomposition, hours on CPU cores (FAISS has no GPU PCA).
    pca_train_size: int | None = Field(None, ge=1)
    rerank: int = 200  # IVF-PQ candidates re-scored exactly from the fp16 shards (0 = off)
    use_gpu: bool = True  # moves flat / IVF-PQ to faiss-gpu when the image has GPUs
    # FAISS OpenMP threads (process-wide); 0 keeps FAISS's default. On a shared, oversubscribed
    # CPU, 1 avoids OpenMP spin-waiting, which made PQ training 6x slower here.
    threads: int = 0


def resolve_kind(cfg: IndexConfig, num_docs: int, dim: int) -> IndexKind:
    if cfg.kind != "auto":
        return cfg.kind
    if num_docs <= cfg.flat_max_docs:
        return "flat"
    if num_docs * dim * 4 <= cfg.hnsw_max_bytes:
        return "hnsw"
    return "ivfpq"


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Flatten (B, n, hidden) or (B, dim) to fp32 rows of unit L2 norm."""
    import faiss

    # always a fresh array: normalize_L2 works in place and must not touch the caller's data
    flat = np.array(np.asarray(vectors).reshape(len(vectors), -1), dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(flat)
    return flat


def _largest_divisor(dim: int, limit: int) -> int:
    return max(d for d in range(1, min(dim, limit) + 1) if dim % d == 0)


def _ivfpq_params(cfg: IndexConfig, num_docs: int, dim: int) -> dict:
    nlist = cfg.ivf_nlist or int(4 * np.sqrt(num_docs))
    nlist = max(1, min(nlist, num_docs // 39))  # faiss wants >= 39 training points per list
    reduce_dim = cfg.reduce_dim if cfg.reduce_dim is not None else (256 if dim > 1024 else 0)
    coded_dim = reduce_dim or dim
    pq_m = cfg.pq_m or _largest_divisor(coded_dim, 64)
    if coded_dim % pq_m:
        raise StoreError(f"index.pq_m={pq_m} must divide the coded dimension {coded_dim}")
    return dict(nlist=nlist, nprobe=cfg.ivf_nprobe, pq_m=pq_m, pq_nbits=cfg.pq_nbits,
                reduce_dim=reduce_dim, rerank=cfg.rerank)


def index_params(cfg: IndexConfig, num_docs: int, dim: int) -> dict:
    kind = resolve_kind(cfg, num_docs, dim)
    if kind == "hnsw":
        return dict(kind=kind, m=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction, ef_search=cfg.hnsw_ef_search)
    if kind == "ivfpq":
        return dict(kind=kind, **_ivfpq_params(cfg, num_docs, dim))
    return dict(kind=kind)


def _new_faiss_index(params: dict, dim: int):
    import faiss

    kind = params["kind"]
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    pre = f"PCA{params['reduce_dim']}," if params["reduce_dim"] else ""
    spec = f"{pre}IVF{params['nlist']},PQ{params['pq_m']}x{params['pq_nbits']}"
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    # polysemous codes only speed up Hamming pre-filtering we do not use, and training them
    # took minutes even for 3k vectors
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    return index


def _apply_search_params(index, params: dict) -> None:
    import faiss

    if params["kind"] == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    elif params["kind"] == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]


def pca_train_rows(cfg: IndexConfig, dim: int, reduce_dim: int, sample_rows: int) -> int:
    """Rows of the training sample the PCA trains on (see IndexConfig.pca_train_size)."""
    rows = min(sample_rows, cfg.pca_train_size or min(16 * reduce_dim, dim - 1))
    if rows < reduce_dim:
        raise StoreError(f"PCA to index.reduce_dim={reduce_dim} dimensions needs >= {reduce_dim} training rows, "
                         f"got {rows}: raise index.pca_train_size / index.train_size or lower index.reduce_dim")
    return rows


def _train_pca(index, sample: np.ndarray, rows: int) -> None:
    """Train the PCA of a PCA + IVF-PQ index on its own, on `rows` random rows of `sample`;
    IndexPreTransform.train then skips it (trained) and trains the IVF-PQ on the whole sample, reduced."""
    import faiss

    pca = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
    pick = np.sort(np.random.default_rng(0).choice(len(sample), size=rows, replace=False))
    pca.train(np.ascontiguousarray(sample[pick]))


def gpu_cloner_options(kind: str, options=None):
    """faiss-gpu cloner options for an index of `kind`: `options` (a faiss.GpuMultipleClonerOptions, made
    here if None) with the fields set."""
    if options is None:
        import faiss

        options = faiss.GpuMultipleClonerOptions()
    # IVF-PQ: float16 lookup tables (the cloner passes useFloat16 on as GpuIndexIVFPQConfig's
    # useFloat16LookupTables). PQ64 x 8 bits needs 64 KiB of float32 tables per query in shared memory,
    # more than the 48 KiB a block gets; float16 halves that. Flat indexes keep float32 vectors.
    options.useFloat16 = kind == "ivfpq"
    options.shard = False  # replicas: each GPU holds the whole index, and any one of them is the index
    return options


def _to_gpu_if_available(index, use_gpu: bool, kind: str) -> tuple[object, bool]:
    """(the index on every visible GPU, True), or (the index, False) where that does not apply."""
    import faiss

    # HNSW has no GPU implementation; faiss-cpu has no get_num_gpus > 0
    if not use_gpu or kind == "hnsw" or not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return index, False
    return faiss.index_cpu_to_all_gpus(index, co=gpu_cloner_options(kind)), True


def _to_cpu(index, on_gpu: bool):
    """The index as a CPU index write_index accepts. Over several GPUs index_cpu_to_all_gpus returns an
    IndexReplicas of identical copies, which write_index refuses: one copy is kept. index_gpu_to_cpu converts
    the GPU indexes, also the ones inside an IndexPreTransform (PCA + IVF-PQ), replicas there included."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexReplicas):
        index = faiss.downcast_index(index.at(0))
    return faiss.index_gpu_to_cpu(index) if on_gpu else index


class VectorIndex:
    """A FAISS index plus the parameters it was built with; rows are global document positions."""

    def __init__(self, faiss_index, params: dict, use_gpu: bool = False):
        self.params = params
        self.kind: IndexKind = params["kind"]
        _apply_search_params(faiss_index, params)
        self._index, self.on_gpu = _to_gpu_if_available(faiss_index, use_gpu, self.kind)

    @property
    def ntotal(self) -> int:
        return self._index.ntotal

    @classmethod
    def build(cls, cfg: IndexConfig, dim: int, num_docs: int, sample: np.ndarray | None,
              chunks: Iterable[np.ndarray]) -> "VectorIndex":
        """Train on `sample` (normalised rows; IVF-PQ only) and add normalised `chunks` in order."""
        if cfg.threads:
            import faiss

            faiss.omp_set_num_threads(cfg.threads)
        params = index_params(cfg, num_docs, dim)
        raw = _new_faiss_index(params, dim)
        if not raw.is_trained and (sample is None or len(sample) < params.get("nlist", 1)):
            raise StoreError(f"{params['kind']} index needs a training sample of >= nlist vectors")
        if params.get("reduce_dim"):  # on the CPU before the move: FAISS has no GPU PCA
            _train_pca(raw, sample, pca_train_rows(cfg, dim, params["reduce_dim"], len(sample)))
        index = cls(raw, params, cfg.use_gpu)
        if not index._index.is_trained:
            index._index.train(sample)
        for chunk in chunks:
            index.add(chunk)
        return index

    @classmethod
    def from_vectors(cls, cfg: IndexConfig, vectors: np.ndarray) -> "VectorIndex":
        """Build from raw vectors (B, n, hidden) or (B, dim); normalised here."""
        flat = normalize(vectors)
        rng = np.random.default_rng(0)
        sample = flat[rng.choice(len(flat), size=min(len(flat), cfg.train_size), replace=False)]
        return cls.build(cfg, flat.shape[1], len(flat), sample, [flat])

    def add(self, normalised: np.ndarray) -> None:
        self._index.add(np.ascontiguousarray(normalised, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int, exact: ExactVectors | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, k), best first; rows -1 where fewer than k docs exist.

        For IVF-PQ with `exact`, the top `rerank` approximate candidates are re-scored with exact
        vectors, so returned scores are true cosines and the order is exact within the candidates.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rerank = self.params.get("rerank", 0) if exact is not None else 0
        fetch = max(k, rerank) if self.kind == "ivfpq" and rerank else k
        scores, rows = self._index.search(queries, fetch)
        if fetch == k:
            return scores, rows
        return _rerank(queries, rows, exact, k)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(_to_cpu(self._index, self.on_gpu), str(path))

    @classmethod
    def load(cls, path: Path, params: dict, use_gpu: bool = False) -> "VectorIndex":
        import faiss

        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise StoreError(f"{path}: cannot read FAISS index: {exc}") from None
        return cls(raw, params, use_gpu)


def _rerank(queries: np.ndarray, candidates: np.ndarray, exact: ExactVectors, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine over each query's candidates; keep the best k."""
    num_q, fetch = candidates.shape
    valid = candidates >= 0
    flat_rows = candidates[valid]
    # fetch each distinct row once, in sorted order (sequential reads of the memory-mapped shards)
    unique_rows, inverse = np.unique(flat_rows, return_inverse=True)
    vectors = exact(unique_rows)
    scores = np.full((num_q, fetch), -np.inf, dtype=np.float32)
    query_of = np.nonzero(valid)[0]
    scores[valid] = np.einsum("ij,ij->i", vectors[inverse], queries[query_of])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_rows = np.take_along_axis(candidates, order, axis=1)
    top_rows[~np.isfinite(top_scores)] = -1
    return top_scores, top_rows
