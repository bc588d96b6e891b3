"""`python -m pipelines.evaluate --config <yaml> [key=value ...]` (also `clara eval`).

Scores a CLaRa checkpoint and its baselines (closed-book, text RAG, BM25 / MiniLM retrieval)
on evaluation questions with Ray Data, on the cluster the process is attached to (`ray job
submit` sets RAY_ADDRESS) or a local one. Writes predictions.jsonl, summary.json, report.md and
PNG plots to `output_dir`; a rerun resumes from the questions already scored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def main(
    config: Annotated[Optional[Path], typer.Option(help="evaluation YAML, e.g. configs/eval/squad_cpu.yaml")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides")] = None,
) -> None:
    """Evaluate a CLaRa checkpoint against the baselines; print the summary."""
    from clara_ray.config import ConfigError, load_config
    from clara_ray.data.records import RecordError
    from clara_ray.evaluation.config import EvalConfig

    try:
        cfg = load_config(EvalConfig, config, overrides)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    import ray

    from clara_ray.evaluation.run import run_evaluation

    if not ray.is_initialized():
        ray.init()  # joins the job's cluster under `ray job submit`, else starts a local one
    try:
        summary = run_evaluation(cfg)
    except (RecordError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({k: summary[k] for k in ("label", "num_questions", "generation", "retrieval")}, indent=2))
    typer.echo(f"report: {Path(cfg.output_dir) / 'report.md'}")


if __name__ == "__main__":
    typer.run(main)
