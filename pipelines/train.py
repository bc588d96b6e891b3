"""`python -m pipelines.train --stage <stage> --config <yaml> [key=value ...]` (also `clara train`).

Runs one CLaRa training stage on Ray Train + DeepSpeed against the Ray cluster the process is
attached to (`ray job submit` sets RAY_ADDRESS), or a local one. Rerunning with the same
`run.name` and `run.storage_path` resumes from the last checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from clara_ray.data.records import STAGES


def main(
    stage: Annotated[str, typer.Option(help=" | ".join(STAGES))],
    config: Annotated[Path, typer.Option(help="stage YAML, e.g. configs/train/cpu/compress_pretrain.yaml")],
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides")] = None,
) -> None:
    """Train one CLaRa stage and export the model directory the next stage reads."""
    from clara_ray.config import ConfigError, load_config
    from clara_ray.train.config import TrainConfig

    if stage not in STAGES:
        raise typer.BadParameter(f"{stage!r} is not one of {', '.join(STAGES)}", param_hint="--stage")
    try:
        cfg = load_config(TrainConfig, config, overrides)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    if cfg.stage != stage:  # a stage-1 YAML run as stage 2 would train the wrong adapters
        raise typer.BadParameter(f"{config} is a {cfg.stage} config, not {stage}", param_hint="--stage")
    from clara_ray.train.trainer import train_stage

    summary = train_stage(cfg)
    typer.echo(summary.describe())


if __name__ == "__main__":
    typer.run(main)
