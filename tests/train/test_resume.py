"""A stage stopped at a checkpoint and resumed trains as if it had never stopped (Ray Train, 2 workers)."""
from __future__ import annotations

import pytest

from train_helpers import tiny_stage_config

# LoRA dropout on, so every step draws random masks; a constant lr without warm-up, so the schedule
# does not depend on the step count the first half was started with.
RANDOM_STEPS = ["model.lora.dropout=0.3", "optim.schedule=constant", "optim.warmup_ratio=0"]


def _final_loss(tmp_path, name: str, steps: int) -> tuple[float, int]:
    """(loss of the last step, step the run resumed from) of a run of `steps` steps named `name`."""
    from clara_ray.train.trainer import train_stage

    cfg = tiny_stage_config("compress_pretrain", tmp_path, name, overrides=[*RANDOM_STEPS, f"max_steps={steps}"])
    summary = train_stage(cfg)
    return summary.final_metrics["loss"], summary.resumed_from_step


def test_a_resumed_run_draws_the_random_numbers_of_an_uninterrupted_one(ray_cluster, tmp_path):
    whole, _ = _final_loss(tmp_path, "whole", 4)
    _final_loss(tmp_path, "halves", 2)
    resumed, resumed_from = _final_loss(tmp_path, "halves", 4)  # the same run name: resumes at step 2
    assert resumed_from == 2
    assert resumed == pytest.approx(whole, rel=1e-6), "the resumed half drew other dropout masks or prompts"
