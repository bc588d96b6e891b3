"""Candidates' vectors read from a store precompressed with the model's own (frozen) compressor.

The stages after the compressor stops training (stage 2 with train_compressor=false, the
retrieval warm-up, stage 3) read every candidate through that compressor. The precompress job
computes each document once, on every core or GPU of the cluster; these stages then look the
vectors up by document text instead of compressing them again in every training worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from clara_ray.config import InputError

# fp16 storage and a merged adapter change the vectors by about 1e-3; another compressor by far more.
MIN_COSINE = 0.999
SAMPLE = 2


class StoredCandidates:
    """Memory vectors by document text, from a published store (memory-mapped, read lazily)."""

    def __init__(self, path: str | Path):
        from clara_ray.store import CompressedStore

        self.path = Path(path)
        self._shards = CompressedStore.open(self.path, verify=False).shards
        self._rows = {text: row for row, text in enumerate(self._shards.column("text"))}
        self.found = self.missed = 0

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """fp32 (n, hidden) vectors of the given texts the store holds; the others are left out."""
        wanted = list(dict.fromkeys(texts))
        held = [t for t in wanted if t in self._rows]
        self.found += len(held)
        self.missed += len(wanted) - len(held)
        if not held:
            return {}
        vectors = self._shards.gather(np.array([self._rows[t] for t in held], dtype=np.int64))
        return dict(zip(held, torch.from_numpy(vectors.astype(np.float32))))

    def check_compressor(self, model) -> None:
        """Fail unless the store's vectors are what this model's compressor computes (a store of
        another checkpoint would train the generator on vectors it never sees at serving)."""
        texts = list(self._rows)[:SAMPLE]
        if not texts:
            raise InputError(f"candidate store {self.path} holds no documents")
        stored = torch.stack([self.lookup([t])[t] for t in texts]).flatten(1)
        fresh = model.compress_documents(texts).float().cpu().flatten(1)
        cosine = torch.nn.functional.cosine_similarity(stored, fresh, dim=1).min().item()
        if cosine < MIN_COSINE:
            raise InputError(
                f"candidate store {self.path} was not compressed by this model's compressor (cosine "
                f"{cosine:.4f} < {MIN_COSINE} on its first documents): precompress the corpus again from the "
                f"checkpoint whose compressor this stage keeps frozen")
        self.found = self.missed = 0
