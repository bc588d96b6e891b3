"""The `clara` command: one subcommand per step, each also runnable as `python -m <module>`.

Each step module exposes `main`, a Typer-annotated function wrapped by pipelines.cli_step (logging,
input errors -> exit 2); heavy imports (torch, docling, ray) stay inside the steps so
`clara --help` is instant.
"""
from __future__ import annotations

import importlib
import os
from typing import Annotated, Optional

import typer

from pipelines.cli_step import LEVELS, LOG_LEVEL_ENV

app = typer.Typer(help="clara-ray: train and serve CLaRa on Ray.", no_args_is_help=True)

# subcommand -> module with `main`, in the order a user walks through them
STEPS = {
    "demo": "pipelines.demo",
    "ingest": "pipelines.ingest",
    "build-squad-data": "pipelines.build_squad_data",
    "train": "pipelines.train",
    "export": "pipelines.export",
    "precompress": "pipelines.precompress",
    "serve": "pipelines.serve",
    "add": "pipelines.add",
    "remove": "pipelines.remove",
    "eval": "pipelines.evaluate",
    "report": "pipelines.report",
    "submit": "cluster.submit",
    "bench": "bench.__main__",
    "reproduce": "experiments.reproduce_paper",
}


@app.callback()
def options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug messages of clara-ray too")] = False,
    log_level: Annotated[Optional[str], typer.Option(
        help=f"{' | '.join(LEVELS)} for clara-ray's messages (default INFO; other libraries: WARNING)")] = None,
) -> None:
    """clara-ray: train and serve CLaRa on Ray."""
    level = "DEBUG" if verbose else log_level
    if level:
        if level.upper() not in LEVELS:
            raise typer.BadParameter(f"{level!r} is not one of {', '.join(LEVELS)}", param_hint="--log-level")
        # The environment carries it to the step and to the processes it starts (subprocess steps, jobs).
        os.environ[LOG_LEVEL_ENV] = level.upper()


for _name, _module in STEPS.items():
    app.command(_name)(importlib.import_module(_module).main)

if __name__ == "__main__":
    app()
