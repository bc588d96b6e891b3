"""The `clara` command: one subcommand per pipeline step.

Each step module exposes `main`, a Typer-annotated function; heavy imports (torch, docling,
ray) stay inside the steps so `clara --help` is instant.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="clara-ray: train and serve CLaRa on Ray.", no_args_is_help=True)

# subcommand -> module under pipelines/
STEPS = {
    "train": "train",
    "build-squad-data": "build_squad_data",
    "demo": "demo",
    "ingest": "ingest",
    "serve": "serve",
    "eval": "evaluate",
    "precompress": "precompress",
}


def _register(name: str, module: str) -> None:
    try:
        main = importlib.import_module(f"pipelines.{module}").main
    except ModuleNotFoundError:
        return
    app.command(name)(main)


for _name, _module in STEPS.items():
    _register(_name, _module)

if __name__ == "__main__":
    app()
