"""Reuse the attention cache of the prompt head every answer prompt starts with.

Every answer prompt opens with the same tokens (chat template, system turn, "Background:"), 23 of
the ~90 a CLaRa prompt has with k=5 documents. A serving replica computes their keys/values once
and starts each generation after them. Rows come left-padded as [pads][head][rest]; they are
rearranged to [head][pads][rest], which the attention mask and the mask-derived positions make
equivalent: the answer is the same, only the head's forward pass is skipped.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def shared_head(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix the given prompts share."""
    length = 0
    while all(len(p) > length for p in prompts) and len({p[length] for p in prompts}) == 1:
        length += 1
    return prompts[0][:length]


class PromptHeadCache:
    def __init__(self, language_model: nn.Module, head_ids: list[int], device: torch.device):
        if not head_ids:
            raise ValueError("the answer prompts share no head to cache")
        self.head = torch.tensor(head_ids, device=device)
        with torch.no_grad():
            self._cache = language_model(input_ids=self.head.unsqueeze(0), use_cache=True).past_key_values

    def arrange(self, input_ids: torch.Tensor, inputs: dict[str, torch.Tensor]) -> dict | None:
        """generate() kwargs that start after the cached head, or None when a row does not begin
        with it (then the caller generates without the cache).

        input_ids: the left-padded prompt ids (B, W); inputs: attention_mask plus input_ids or
        inputs_embeds of the same rows, as generate() would receive them.
        """
        mask = inputs["attention_mask"]
        width, size = input_ids.shape[1], len(self.head)
        starts = (width - mask.sum(1)).tolist()
        if any(width - s < size or not torch.equal(input_ids[i, s:s + size], self.head)
               for i, s in enumerate(starts)):
            return None
        order = torch.stack([torch.cat([torch.arange(s, s + size), torch.arange(0, s), torch.arange(s + size, width)])
                             for s in starts]).to(mask.device)
        arranged = {name: value.gather(1, order if value.dim() == 2 else
                                       order.unsqueeze(-1).expand(-1, -1, value.shape[-1]))
                    for name, value in inputs.items()}
        cache = copy.deepcopy(self._cache)  # generate() appends to the cache it is given
        cache.batch_repeat_interleave(len(starts))
        return arranged | {"past_key_values": cache}
