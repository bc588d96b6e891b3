"""A compressor trained under memory_center_training "batch" exports the running mean memory of its
final weights, not an average over batches it has moved away from (Ray Train, 2 workers)."""
from __future__ import annotations

import itertools
import json

import torch

from train_helpers import SAMPLE, STAGE_DATA, tiny_stage_config

CENTERED = ["model.memory_norm=centered", "model.memory_center_training=batch", "optim.lr=1e-2",
            "optim.schedule=constant", "optim.warmup_ratio=0", "batch.micro_size=2"]


def test_the_export_subtracts_the_mean_memory_of_documents_it_trained_on(ray_cluster, tmp_path):
    from clara_ray import CLaRa
    from clara_ray.train.trainer import train_stage

    summary = train_stage(tiny_stage_config("compress_pretrain", tmp_path, "centered", overrides=CENTERED))
    model = CLaRa.from_pretrained(summary.model_dir, device="cpu")
    docs = sorted({d for line in (SAMPLE / STAGE_DATA["compress_pretrain"]).open()
                   for d in json.loads(line)["docs"]})
    memories = model.compress_documents(docs).float()
    # rank 0 saw 2 steps x 2 records: its running mean is the final weights' mean over 1-4 of the documents
    distance = min(float((memories[list(s)].mean(0) - model.memory_center).norm())
                   for k in range(1, 5) for s in itertools.combinations(range(len(docs)), k))
    assert distance < 1e-4 * float(model.memory_center.norm())
    # and not the mean over every document, which a lagging average would not be either
    assert float((memories.mean(0) - model.memory_center).norm()) > 100 * distance
    assert torch.isfinite(model.memory_center).all()
