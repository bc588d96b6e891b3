"""Synthetic memory-token vectors for index tests and benchmarks.

Real document embeddings live near a low-dimensional subspace; i.i.d. Gaussian vectors in 4608
dimensions do not (all cosines ~0, no neighbourhoods), which would make any ANN look broken. So
docs are low-rank latents (grouped in topics) times a fixed basis plus isotropic noise, and queries are noisy copies of
docs. Generation is chunked and seeded per chunk so a million docs never need to fit in memory.
"""
from __future__ import annotations

import numpy as np


def _basis(shape: tuple[int, int], rank: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rank, shape[0] * shape[1]), dtype=np.float32)


def synthetic_docs(count: int, shape: tuple[int, int], chunk_seed: int, topics: int = 100, rank: int = 64,
                   spread: float = 0.7, noise: float = 0.5, basis_seed: int = 0) -> np.ndarray:
    """(count, n, hidden) float32 docs around `topics` topic centres (shared by every chunk)."""
    centres = np.random.default_rng([basis_seed, 1]).standard_normal((topics, rank), dtype=np.float32)
    rng = np.random.default_rng([basis_seed, 2, chunk_seed])
    topic = rng.integers(0, topics, size=count)
    latent = centres[topic] + spread * rng.standard_normal((count, rank), dtype=np.float32)
    docs = latent @ _basis(shape, rank, basis_seed) / np.sqrt(rank)
    docs += noise * rng.standard_normal(docs.shape, dtype=np.float32)
    return docs.reshape(count, *shape)


def noisy_queries(docs: np.ndarray, count: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(queries (count, n*hidden), source rows): perturbed copies of randomly chosen docs."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(docs), size=count, replace=False)
    flat = docs[rows].reshape(count, -1).astype(np.float32)
    scale = np.linalg.norm(flat, axis=1, keepdims=True) / np.sqrt(flat.shape[1])
    return flat + noise * scale * rng.standard_normal(flat.shape, dtype=np.float32), rows
