"""`python -m pipelines.export --stage <stage> --config <yaml> [key=value ...] [--step N]` (also `clara export`).

Writes the CLaRa directory of any checkpoint a training run kept, as the run's final step writes
its own: the run is named by the same config and overrides it was trained with.
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
    config: Annotated[Path, typer.Option(help="the run's stage YAML, e.g. configs/train/cpu/compress_pretrain.yaml")],
    overrides: Annotated[Optional[List[str]], typer.Argument(help="the run's key.sub=value overrides")] = None,
    step: Annotated[Optional[int], typer.Option(help="the checkpoint's step (default: the latest kept)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="model directory to write (default: <run>/model-step<N>)")] = None,
) -> None:
    """Export a CLaRa model directory from a checkpoint of a training run.

    A stage exports its model at its last step only; this exports an earlier
    checkpoint (Ray Train keeps the last checkpoint.keep of them), e.g. to
    evaluate stage 1 half-way, or a run stopped before its end:

      clara export --stage compress_pretrain \\
        --config configs/train/cpu/compress_pretrain.yaml --step 100

    The result reads like any export: clara precompress --checkpoint, clara
    eval, or the next stage's init_from.
    """
    from clara_ray.config import ConfigError, load_config
    from clara_ray.train.config import TrainConfig
    from clara_ray.train.export import export_checkpoint

    cfg = load_config(TrainConfig, config, overrides)
    if cfg.stage != stage:  # a stage-2 config would build the wrong adapters to load into
        raise ConfigError(f"{config} is a {cfg.stage} config, not {stage}")
    exported_step, directory = export_checkpoint(cfg, step, out)
    typer.echo(f"[{stage}] step {exported_step} of {cfg.run.checkpoint_dir} exported to {directory}")


if __name__ == "__main__":
    typer.run(main)
