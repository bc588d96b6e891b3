"""DeepSpeed JSON and learning-rate schedule generated from a `TrainConfig`.

The same function yields the GPU recipe (bf16, ZeRO-2, fused Adam) and the CPU one (fp32,
torch AdamW) purely from config values.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from clara_ray.config import merge_dicts
from clara_ray.train.config import TrainConfig


def build_deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    ds = cfg.deepspeed
    optim = cfg.optim
    adam_params: dict[str, Any] = {
        "lr": optim.lr,
        "betas": list(optim.betas),
        "eps": 1e-8,
        "weight_decay": optim.weight_decay,
    }
    if optim.torch_adam:
        adam_params["torch_adam"] = True
    config: dict[str, Any] = {
        "train_batch_size": cfg.batch.global_size,
        "train_micro_batch_size_per_gpu": cfg.batch.micro_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": optim.grad_clip,
        "optimizer": {"type": "AdamW", "params": adam_params},
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        "zero_optimization": {
            "stage": ds.zero_stage,
            "overlap_comm": cfg.resources.use_gpu,
            "contiguous_gradients": True,
        },
        "steps_per_print": 10**9,  # progress is ours (rank-0 log + TensorBoard), not DeepSpeed's
        "wall_clock_breakdown": False,
    }
    return merge_dicts(config, ds.extra)


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step `step` (linear warmup, then cosine or flat)."""
    optim = cfg.optim
    if optim.schedule == "constant":
        return lambda step: 1.0
    warmup = math.ceil(optim.warmup_ratio * total_steps)
    floor = optim.min_lr_ratio

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def scheduler_factory(cfg: TrainConfig, total_steps: int):
    """A callable `deepspeed.initialize` turns into a scheduler on the optimizer it builds."""
    from torch.optim.lr_scheduler import LambdaLR

    return lambda optimizer: LambdaLR(optimizer, lr_lambda(cfg, total_steps))
