"""What the retriever hands the generator for one question."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class Retrieved:
    ids: list[str]
    scores: list[float]
    texts: list[str]
    sources: list[str]
    vectors: np.ndarray  # (k, n, hidden) float16: the exact memory-token states, not the ANN codes
    store_version: int = 0  # the store version searched

    def __len__(self) -> int:
        return len(self.ids)


def memory_vectors(retrieved: list[Retrieved], model) -> list[torch.Tensor]:
    """Each question's retrieved vectors on the generator's device, in its embedding dtype."""
    import torch

    dtype = model.embeddings.new_rows.dtype
    return [torch.from_numpy(r.vectors).to(model.device, dtype) for r in retrieved]
