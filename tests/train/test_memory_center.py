"""A compressor trained under memory_center_training "batch" exports the running mean memory of its
final weights, not an average over batches it has moved away from (Ray Train, 2 workers)."""
from __future__ import annotations

import torch

from train_helpers import CENTERED, center_distances, tiny_stage_config


def test_the_export_subtracts_the_mean_memory_of_documents_it_trained_on(ray_cluster, tmp_path):
    from clara_ray import CLaRa
    from clara_ray.train.trainer import train_stage

    summary = train_stage(tiny_stage_config("compress_pretrain", tmp_path, "centered", overrides=CENTERED))
    model = CLaRa.from_pretrained(summary.model_dir, device="cpu")
    # rank 0 saw 2 steps x 2 records: its running mean is the final weights' mean over 1-4 of the documents
    nearest, to_all = center_distances(model)
    assert nearest < 1e-4 * float(model.memory_center.norm())
    # and not the mean over every document, which a lagging average would not be either
    assert to_all > 100 * nearest
    assert torch.isfinite(model.memory_center).all()
