"""The DeepSpeed JSON and lr schedule generated from stage configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from clara_ray.config import load_config
from clara_ray.train.config import TrainConfig
from clara_ray.train.deepspeed_config import build_deepspeed_config, lr_lambda

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _cfg(path, *overrides):
    return load_config(TrainConfig, CONFIGS / path, list(overrides))


def test_gpu_profile_is_bf16_zero2_torch_adamw():
    ds = build_deepspeed_config(_cfg("compress_pretrain.yaml"))
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"]["stage"] == 2
    # torch's AdamW: DeepSpeed's FusedAdam would be JIT-compiled (nvcc, minutes) at every job start on a
    # fresh node, for no gain with LoRA's few million trainable weights (issue 29).
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["train_batch_size"] == 128 == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 8
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.95] and ds["gradient_clipping"] == 1.0


def test_cpu_profile_is_fp32_torch_adamw_and_extra_merges():
    ds = build_deepspeed_config(_cfg("cpu/instruct.yaml", "deepspeed.extra={zero_optimization: {reduce_bucket_size: 1000}}"))
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": False, "contiguous_gradients": True,
                                       "reduce_bucket_size": 1000}


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    cfg = _cfg("cpu/compress_pretrain.yaml", "optim.warmup_ratio=0.1")
    f = lr_lambda(cfg, 100)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert f(100) == pytest.approx(0.1)


def test_stage3_schedule_is_constant():
    f = lr_lambda(_cfg("cpu/end_to_end.yaml"), 50)
    assert {f(s) for s in range(50)} == {1.0}
