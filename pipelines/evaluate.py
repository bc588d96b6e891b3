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

from pipelines.cli_step import cli_step


@cli_step
def main(
    config: Annotated[Optional[Path], typer.Option(
        help="evaluation YAML, e.g. experiments/configs/eval_squad_cpu.yaml")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides")] = None,
) -> None:
    """Evaluate a CLaRa checkpoint against the baselines; print the summary.

    The stage-3 model that `clara train --stage end_to_end` exports (CPU profile)
    on the bundled SQuAD sample (a SQuAD v1.1 JSON of your own works the same):

      clara eval --config experiments/configs/eval_squad_cpu.yaml \\
        checkpoint=runs/cpu-end-to-end/model output_dir=runs/eval \\
        data.path=examples/data/sample_squad.json \\
        data.article_range=null data.per_article=3

    The same questions with the generator reading only the top-1 (`clara report`
    puts the two side by side):

      clara eval --config experiments/configs/eval_squad_cpu.yaml \
        checkpoint=runs/cpu-end-to-end/model output_dir=runs/eval-top1 \
        data.path=examples/data/sample_squad.json \
        data.article_range=null data.per_article=3 harness.top_k=1
    """
    from clara_ray.config import load_config
    from clara_ray.evaluation.config import EvalConfig

    cfg = load_config(EvalConfig, config, overrides)
    import ray

    from clara_ray.evaluation.run import run_evaluation

    if not ray.is_initialized():
        ray.init()  # joins the job's cluster under `ray job submit`, else starts a local one
    summary = run_evaluation(cfg)
    typer.echo(json.dumps({k: summary[k] for k in ("label", "num_questions", "generation", "retrieval")}, indent=2))
    typer.echo(f"report: {Path(cfg.output_dir) / 'report.md'}")


if __name__ == "__main__":
    typer.run(main)
