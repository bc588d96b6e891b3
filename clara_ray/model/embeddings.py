"""Input embedding with a separate, trainable block of rows for the added special tokens.

Keeping the new rows in their own parameter means only they can train (the original table stays
frozen and out of the optimizer and ZeRO partitions), and the output head is untouched, so the
generator can never emit a memory token.
"""
from __future__ import annotations

import torch
from torch import nn


class ExtendedEmbedding(nn.Module):
    def __init__(self, base: nn.Embedding, first_new_id: int, num_new: int):
        super().__init__()
        self.base = base
        self.first_new_id = first_new_id
        # Mean of the existing rows: new tokens start "in distribution" for the backbone.
        init = base.weight[:first_new_id].detach().float().mean(0, keepdim=True).repeat(num_new, 1)
        self.new_rows = nn.Parameter(init.to(base.weight.dtype))
        # Median L2 norm of the original rows: the scale of an ordinary input token.
        self.register_buffer("token_norm", base.weight[:first_new_id].detach().float().norm(dim=-1).median(),
                             persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # some HF utilities read `.weight` of the input embedding
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.first_new_id + self.new_rows.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_new = input_ids >= self.first_new_id
        old = self.base(input_ids.masked_fill(is_new, 0))
        new = self.new_rows[(input_ids - self.first_new_id).clamp(min=0)]
        return torch.where(is_new.unsqueeze(-1), new, old)
