"""Pieces of the worker loop that run without a cluster: model set-up per stage, checkpointing."""
from __future__ import annotations

from tests.train.conftest import tiny_stage_config


def test_gradient_checkpointing_keeps_lora_gradients(tmp_path):
    from clara_ray.data.records import read_records
    from clara_ray.train.loop import build_model, enable_gradient_checkpointing
    from tests.train.conftest import SAMPLE

    model = build_model(tiny_stage_config("compress_pretrain", tmp_path, "gc"), "cpu")
    enable_gradient_checkpointing(model)
    assert model.language_model.is_activation_checkpointing
    model.train()
    out = model(read_records(SAMPLE / "pretrain_data.jsonl", "compress_pretrain")[:2], "compress_pretrain")
    out.loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert any(p.grad.abs().sum() > 0 for p in trainable if p.shape[0] > 1)
