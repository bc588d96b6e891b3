"""`make demo`: ingest -> three training stages -> precompress -> serve -> questions, each step a
Ray job on a local cluster. A rerun skips steps that finished; a failure names the step and its log."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from pipelines.cli_step import cli_step


@cli_step
def main(
    config: Annotated[Path, typer.Option(help="demo YAML")] = Path("configs/demo.yaml"),
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key=value overrides, e.g. workdir=/tmp/d")] = None,
) -> None:
    """Run the whole CLaRa pipeline end to end on the embedded default.

    The bundled documents, SmolLM2-135M on CPU, a local Ray cluster; outputs
    under runs/demo (10-20 minutes on 2 cores; a rerun skips finished steps):

      clara demo

      clara demo workdir=/tmp/clara-demo
    """
    from clara_ray.config import load_config
    from clara_ray.demo.config import DemoConfig
    from clara_ray.demo.runner import run_demo
    from clara_ray.jobs import JobFailed

    cfg = load_config(DemoConfig, config, overrides)
    # `kill` as well as Ctrl-C unwinds through run_demo, so the local cluster and server stop.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        run_demo(cfg)
    except JobFailed as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    typer.run(main)
