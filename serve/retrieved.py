"""What the retriever hands the generator for one question."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Retrieved:
    ids: list[str]
    scores: list[float]
    texts: list[str]
    sources: list[str]
    vectors: np.ndarray  # (k, n, hidden) float16: the exact memory-token states, not the ANN codes

    def __len__(self) -> int:
        return len(self.ids)
