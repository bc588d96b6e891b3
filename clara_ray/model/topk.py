"""Straight-through differentiable top-k (docs/design.md section 4).

Forward: the exact hard top-k, in rank order. Backward: slot j's gradient flows through a
softmax over score/tau with the documents chosen for earlier slots masked out. No Gumbel noise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """(B, D) x (B, N, D) -> (B, N) cosine similarity, computed in fp32."""
    q = F.normalize(queries.float(), dim=-1)
    d = F.normalize(documents.float(), dim=-1)
    return torch.einsum("bd,bnd->bn", q, d)


def straight_through_topk(scores: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, N), -inf where a candidate is padding -> (weights (B, k, N), indices (B, k))."""
    if k > scores.shape[-1]:
        raise ValueError(f"top-k of {k} from only {scores.shape[-1]} candidates")
    logits = scores / temperature
    taken = torch.zeros_like(scores, dtype=torch.bool)
    weights, indices = [], []
    for _ in range(k):
        masked = logits.masked_fill(taken, float("-inf"))
        soft = masked.softmax(-1)
        index = masked.argmax(-1)
        hard = F.one_hot(index, scores.shape[-1]).to(soft.dtype)
        weights.append(hard + soft - soft.detach())
        indices.append(index)
        taken = taken | hard.bool()
    return torch.stack(weights, 1), torch.stack(indices, 1)
