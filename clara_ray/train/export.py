"""A CLaRa directory from any kept checkpoint of a training run, not only its last.

A stage exports its model once, at its final step. `clara export` writes the same directory from an
earlier checkpoint: to evaluate or serve the model as it was before it overfit, or to look at a long
run half-way. It builds the stage's model as the workers did (with the run's seed, so the adapters
the stage does not train come out as in the final export), loads the checkpoint's trainable weights
and buffers (DeepSpeed's rank-0 module state; the frozen backbone is not in it) and saves it.
"""
from __future__ import annotations

import re
from pathlib import Path

from clara_ray.atomic import replace_dir
from clara_ray.config import ConfigError
from clara_ray.model.configuration import CheckpointError, weights_mismatch
from clara_ray.train.config import TrainConfig
from clara_ray.train.loop import TAG_PREFIX, stage_model

# ZeRO stages 1-2 keep the whole module state on rank 0; the other files are optimizer shards.
MODEL_STATES = "mp_rank_00_model_states.pt"


def kept_checkpoints(run_dir: Path) -> dict[int, Path]:
    """step -> DeepSpeed tag directory of each checkpoint Ray Train kept in `run_dir`, by step."""
    found = {}
    for tag in run_dir.glob(f"checkpoint_*/{TAG_PREFIX}*"):
        match = re.fullmatch(rf"{TAG_PREFIX}(\d+)", tag.name)
        if match and tag.is_dir():
            found[int(match.group(1))] = tag
    return dict(sorted(found.items()))


def find_checkpoint(cfg: TrainConfig, step: int | None) -> tuple[int, Path]:
    """(step, tag directory) of the run's checkpoint of `step`, or of its latest if None."""
    if cfg.run.remote_storage:
        raise ConfigError(f"run.storage_path {cfg.run.storage_path} is a bucket: copy the run directory to a "
                          "local path and point run.storage_path there to export from it")
    run_dir = cfg.run.checkpoint_dir
    kept = kept_checkpoints(run_dir)
    if not kept:
        raise ConfigError(f"{run_dir}: no checkpoints there (run.storage_path and run.name name the run)")
    if step is None:
        step = max(kept)
    if step not in kept:
        raise ConfigError(f"{run_dir} keeps no checkpoint of step {step}; it keeps steps "
                          f"{', '.join(map(str, kept))} (checkpoint.keep of them, every checkpoint.every_steps)")
    return step, kept[step]


def load_trained_state(model, tag_dir: Path) -> None:
    """Load the checkpoint's module state into `model`, which must train the same tensors."""
    import torch

    file = tag_dir / MODEL_STATES
    if not file.is_file():
        raise CheckpointError(f"{tag_dir}: no {MODEL_STATES} (not a ZeRO stage 1-2 checkpoint, or damaged)")
    state = torch.load(file, map_location="cpu", weights_only=False)["module"]  # DeepSpeed's own file
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # torch's "size mismatch"
        raise CheckpointError(f"{file}: weights do not fit the model this config builds: "
                              f"{weights_mismatch(exc)}") from None
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    absent = sorted(set(trainable) & set(result.missing_keys))
    if absent or result.unexpected_keys:
        example = (absent or result.unexpected_keys)[0]
        raise CheckpointError(f"{file}: not a checkpoint of the model this config builds ({len(absent)} trained "
                              f"tensors missing, {len(result.unexpected_keys)} unknown, e.g. {example}); "
                              "export with the run's own config and overrides")


def export_checkpoint(cfg: TrainConfig, step: int | None = None, out: Path | None = None) -> tuple[int, Path]:
    """Write the CLaRa directory of the run's checkpoint of `step` (default: the latest) to `out`
    (default: <run>/model-step<step>), replacing it whole; returns (step, directory)."""
    import torch

    cfg = cfg.with_absolute_paths()
    step, tag_dir = find_checkpoint(cfg, step)
    target = Path(out).expanduser().resolve() if out else cfg.run.checkpoint_dir / f"model-step{step}"
    torch.manual_seed(cfg.seed)  # as train_worker: adapters the stage does not train start alike
    model = stage_model(cfg, "cpu")
    load_trained_state(model, tag_dir)
    model.mark_trained(cfg.stage)
    replace_dir(target, model.save_pretrained)
    return step, target
