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
from pipelines.cli_step import cli_step


@cli_step
def main(
    stage: Annotated[str, typer.Option(help=" | ".join(STAGES))],
    config: Annotated[Path, typer.Option(help="stage YAML, e.g. configs/train/cpu/compress_pretrain.yaml")],
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides")] = None,
) -> None:
    """Train one CLaRa stage and export the model directory the next stage reads.

    The CPU profiles train SmolLM2-135M on the bundled sample data; a stage
    exports to <run.storage_path>/<run.name>/model (runs/cpu-compress-pretrain/
    model, ...), where the next stage's init_from points. The three stages in
    order (for your own data, set data.paths to the ingest outputs
    pretrain_data.jsonl, instruction_data.jsonl, end_to_end_data.jsonl):

      clara train --stage compress_pretrain \\
        --config configs/train/cpu/compress_pretrain.yaml

      clara train --stage instruct --config configs/train/cpu/instruct.yaml

      clara train --stage end_to_end --config configs/train/cpu/end_to_end.yaml
    """
    from clara_ray.config import ConfigError, load_config
    from clara_ray.train.config import TrainConfig

    if stage not in STAGES:
        raise ConfigError(f"--stage {stage!r} is not one of {', '.join(STAGES)}")
    cfg = load_config(TrainConfig, config, overrides)
    if cfg.stage != stage:  # a stage-1 YAML run as stage 2 would train the wrong adapters
        raise ConfigError(f"{config} is a {cfg.stage} config, not {stage}")
    from clara_ray.train.trainer import train_stage

    summary = train_stage(cfg)
    typer.echo(summary.describe())


if __name__ == "__main__":
    typer.run(main)
