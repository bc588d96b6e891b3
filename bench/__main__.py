"""Run every benchmark in turn: `python -m bench [--squad FILE] [--only NAME,...] [--skip NAME,...]`.

Each benchmark runs in its own process, one after another (on a small machine two benchmarks side
by side would each measure the other), and prints its own ratios; a summary of exit codes closes.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from clara_ray.config import InputError
from pipelines.cli_step import cli_step

# Order: cheapest first, so a user who interrupts still has figures.
BENCHMARKS: dict[str, list[str]] = {
    "store_search": ["--sizes", "100000"],
    "ingest_extraction": [],
    "precompress_throughput": [],
    "train_throughput": [],
    "serve_latency": [],
    "serve_load": [],
}
TAKES_SQUAD = {"serve_latency", "serve_load", "train_throughput"}


def _names(csv: Optional[str]) -> list[str]:
    return [n.strip() for n in csv.split(",")] if csv else []


def _selected(only: Optional[str], skip: Optional[str]) -> list[str]:
    names, skipped = _names(only) or list(BENCHMARKS), _names(skip)
    unknown = [n for n in names + skipped if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    return [n for n in names if n not in skipped]


@cli_step
def main(
    squad: Annotated[Optional[Path], typer.Option(help="SQuAD v1.1 JSON for the serving benchmarks")] = None,
    only: Annotated[Optional[str], typer.Option(help="comma-separated subset to run")] = None,
    skip: Annotated[Optional[str], typer.Option(help="comma-separated benchmarks to leave out")] = None,
) -> None:
    """Run the benchmarks one after another, each in its own process; a table of exit codes closes.

    Each benchmark prints its own timings and ratios. The cheapest one alone
    (FAISS search over 100k synthetic documents):

      clara bench --only store_search
    """
    results: dict[str, tuple[int, float]] = {}
    for name in _selected(only, skip):
        argv = [sys.executable, "-m", f"bench.{name}", *BENCHMARKS[name]]
        if name in TAKES_SQUAD and squad is not None:
            argv += ["--squad", str(squad)]
        typer.echo(f"\n=== bench.{name}: {' '.join(argv[1:])}", err=True)
        start = time.perf_counter()
        code = subprocess.call(argv)
        results[name] = (code, time.perf_counter() - start)
    typer.echo("\nbenchmark                 exit   minutes")
    for name, (code, seconds) in results.items():
        typer.echo(f"{name:<25} {code:>4}   {seconds / 60:7.1f}")
    if any(code for code, _ in results.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
