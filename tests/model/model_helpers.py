"""Records and adapter set-up shared by the model tests."""
from __future__ import annotations

import torch

from clara_ray import CLaRa
from clara_ray.data.records import parse_record


def stage1_records():
    return [
        parse_record({"data_type": "qa", "question": ["Who wrote it?"], "answers": ["Ada"],
                      "docs": ["Ada wrote the first program in 1843."]}, "compress_pretrain"),
        parse_record({"data_type": "paraphrase", "answers": ["A cat sat on a mat."],
                      "docs": ["The cat was sitting on the mat."]}, "compress_pretrain"),
    ]


def stage3_records():
    docs = [f"Document number {i} talks about topic {i}." for i in range(6)]
    return [parse_record({"question": "Which topic?", "docs": docs, "answer": "topic 3", "pos_index": [3]},
                         "end_to_end")]


def randomise_adapters(model: CLaRa, seed: int = 0) -> None:
    """Give every LoRA weight a non-zero value so adapters visibly change outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        model.embeddings.new_rows.add_(torch.randn(model.embeddings.new_rows.shape, generator=gen) * 0.1)
