import numpy as np
import pytest

from clara_ray.store import IndexConfig, VectorIndex, normalize
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
