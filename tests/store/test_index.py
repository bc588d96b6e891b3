import numpy as np
import pytest

from clara_ray.store import IndexConfig, StoreError, VectorIndex, normalize
from clara_ray.store.index import resolve_kind
from clara_ray.store.synthetic import noisy_queries, synthetic_docs

from store_helpers import same_top


@pytest.fixture(scope="module")
def corpus():
    docs = synthetic_docs(3000, (4, 32), chunk_seed=1, topics=100)
    queries, _ = noisy_queries(docs, 200, seed=2)
    flat_docs = normalize(docs)
    exact = VectorIndex.from_vectors(IndexConfig(kind="flat"), docs)
    scores, rows = exact.search(normalize(queries), 5)
    return docs, flat_docs, normalize(queries), scores, rows


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_ann_matches_exact_top5_on_95_percent_of_queries(corpus, kind):
    docs, flat_docs, queries, _, exact_rows = corpus
    index = VectorIndex.from_vectors(IndexConfig(kind=kind, threads=1), docs)
    _, rows = index.search(queries, 5, exact=lambda r: flat_docs[r])
    assert same_top(rows, exact_rows) >= 0.95


def test_ivfpq_rerank_returns_exact_cosines(corpus):
    docs, flat_docs, queries, _, _ = corpus
    index = VectorIndex.from_vectors(IndexConfig(kind="ivfpq", threads=1), docs)
    scores, rows = index.search(queries[:20], 5, exact=lambda r: flat_docs[r])
    expected = np.einsum("qkd,qd->qk", flat_docs[rows], queries[:20])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 1e-7).all()  # best first


def test_default_kind_grows_with_the_corpus():
    cfg = IndexConfig()
    assert resolve_kind(cfg, 1_000, 4608) == "flat"
    assert resolve_kind(cfg, 100_000, 4608) == "hnsw"  # 1.8 GB of fp32 vectors fits the budget
    assert resolve_kind(cfg, 1_000_000, 4608) == "ivfpq"
    assert resolve_kind(IndexConfig(kind="hnsw"), 10, 8) == "hnsw"


def test_normalize_does_not_modify_its_input():
    raw = np.full((2, 4, 8), 3.0, dtype=np.float32)
    out = normalize(raw)
    assert (raw == 3.0).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_replicated_index_is_written_as_one_cpu_copy(corpus, tmp_path):
    """index_cpu_to_all_gpus over several GPUs returns an IndexReplicas, which write_index refuses; the
    store writes one copy. A CPU IndexReplicas takes the same path (no GPU here)."""
    import faiss

    docs, flat_docs, queries, exact_scores, exact_rows = corpus
    replicas = faiss.IndexReplicas(flat_docs.shape[1])
    copies = [faiss.IndexFlatIP(flat_docs.shape[1]) for _ in range(2)]
    for copy in copies:
        replicas.addIndex(copy)
    replicas.add(flat_docs)
    with pytest.raises(RuntimeError):
        faiss.write_index(replicas, str(tmp_path / "raw.index"))
    VectorIndex(replicas, {"kind": "flat"}).save(tmp_path / "index.faiss")
    loaded = VectorIndex.load(tmp_path / "index.faiss", {"kind": "flat"})
    assert type(faiss.downcast_index(loaded._index)).__name__ == "IndexFlatIP" and loaded.ntotal == len(docs)
    scores, rows = loaded.search(queries, 5)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-6)


def test_gpu_cloner_options_use_float16_lookup_tables_for_pq_only():
    from types import SimpleNamespace  # faiss-cpu has no GpuMultipleClonerOptions; the same fields are set

    from clara_ray.store.index import gpu_cloner_options

    ivfpq = gpu_cloner_options("ivfpq", SimpleNamespace())
    assert ivfpq.useFloat16 is True and ivfpq.shard is False  # -> GpuIndexIVFPQConfig.useFloat16LookupTables
    assert gpu_cloner_options("flat", SimpleNamespace()).useFloat16 is False  # exact vectors stay float32


def test_pca_trains_on_a_gram_sized_sample(corpus):
    """Fewer PCA rows than dimensions: FAISS takes the Gram-matrix path (at 32,768 dims the covariance path
    costs hours); the re-ranked search still finds the exact top 5."""
    import faiss

    from clara_ray.store.index import pca_train_rows

    assert pca_train_rows(IndexConfig(), 8 * 4096, 256, 65_536) == 4096  # a 7B backbone, n = 8 memory tokens
    docs, flat_docs, queries, _, exact_rows = corpus
    dim = flat_docs.shape[1]
    index = VectorIndex.from_vectors(IndexConfig(kind="ivfpq", reduce_dim=32, threads=1), docs)
    pca = faiss.downcast_VectorTransform(faiss.downcast_index(index._index).chain.at(0))
    assert faiss.vector_to_array(pca.PCAMat).size == dim * (dim - 1)  # dim - 1 rows: Gram path
    _, rows = index.search(queries, 5, exact=lambda r: flat_docs[r])
    assert same_top(rows, exact_rows) >= 0.95
    with pytest.raises(StoreError, match="index.reduce_dim=32 dimensions needs >= 32 training rows, got 16"):
        VectorIndex.from_vectors(IndexConfig(kind="ivfpq", reduce_dim=32, pca_train_size=16, threads=1), docs)
