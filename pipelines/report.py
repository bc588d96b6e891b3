"""`python -m pipelines.report EVALUATION... --out DIR` (also `clara report`).

One report from several finished evaluations (output directories of `clara eval`, or their
summary.json): their rows side by side in every table (answers, memory diagnostics, scores by
answer position, retrieval) and one F1-vs-compression-rate plot over all of them, e.g. for
checkpoints of one recipe trained at different rates in separate runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer
from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.cli_step import cli_step

SUMMARY = "summary.json"


class _Scores(BaseModel):
    model_config = ConfigDict(extra="allow")
    n: int


class _Answers(_Scores):
    f1: float


class EvaluationSummary(BaseModel):
    """What every table and plot reads of a summary (the rest is optional or passed through)."""
    model_config = ConfigDict(extra="allow")
    label: str
    num_questions: int
    generation: dict[str, _Answers]
    retrieval: dict[str, _Scores]


def read_summary(path: Path) -> dict[str, Any]:
    """An evaluation's summary, from its output directory or the file itself; an error naming the
    file when it is missing, not JSON or not an evaluation summary."""
    from clara_ray.config import InputError
    from clara_ray.parsing import ParseError, parse_json, read_text
    from clara_ray.unicode import encoding_problem

    file = path / SUMMARY if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{file}: not found (an output directory of `clara eval` holds {SUMMARY} once it finished)")
    try:
        summary = parse_json(read_text(file))
    except ParseError as e:
        raise InputError(f"{file}: not a JSON evaluation summary ({e})") from None
    # JSON escapes can spell a lone surrogate, which no report file could hold
    if problem := encoding_problem(json.dumps(summary, ensure_ascii=False)):
        raise InputError(f"{file}: not an evaluation summary (its text {problem})")
    try:
        EvaluationSummary.model_validate(summary)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise InputError(f"{file}: not an evaluation summary (field {field}: {error['msg']})") from e
    return summary


def relabel(summaries: list[dict[str, Any]], labels: list[str] | None, sources: list[Path]) -> list[dict[str, Any]]:
    """The summaries under the given labels (one per evaluation, in order), or their own; labels
    must tell the runs apart, since every table row starts with one, and fit in a table cell."""
    from clara_ray.config import InputError
    from clara_ray.evaluation.report import label_problem
    from clara_ray.unicode import printable

    if labels:
        if len(labels) != len(summaries):
            raise InputError(f"--label given {len(labels)} times for {len(summaries)} evaluations: one per evaluation")
        summaries = [{**s, "label": label} for s, label in zip(summaries, labels)]
    seen: dict[str, Path] = {}
    for s, source in zip(summaries, sources):
        if problem := label_problem(s["label"]):
            raise InputError(f"{source}: label {printable(s['label'])!r} would break the report's tables "
                             f"(it {problem}): give it another with --label")
        if s["label"] in seen:
            raise InputError(f"{source} and {seen[s['label']]} are both labelled {s['label']!r}: "
                             "tell them apart with one --label per evaluation")
        seen[s["label"]] = source
    return summaries


@cli_step
def main(
    evaluations: Annotated[List[Path], typer.Argument(help="output directories of `clara eval` (or their summary.json)")],
    out: Annotated[Path, typer.Option(help="directory for report.md and its plots")],
    label: Annotated[Optional[List[str]], typer.Option(
        help="a run's name in the tables, once per evaluation, in order (default: each summary's own label)")] = None,
    title: Annotated[str, typer.Option(help="the report's heading")] = "Evaluation",
    preamble: Annotated[str, typer.Option(help="Markdown under the heading: what was run, how")] = "",
) -> None:
    """Put finished evaluations side by side in one report.

    The stage-3 model that `clara train --stage end_to_end` exports (CPU profile),
    evaluated as in `clara eval --help` with its top-5 and again with its top-1:

      clara report runs/eval runs/eval-top1 --out runs/eval-report \\
        --label top-5 --label top-1
    """
    from clara_ray.evaluation.report import write_report

    summaries = relabel([read_summary(p) for p in evaluations], label, evaluations)
    typer.echo(f"report: {write_report(summaries, out, title=title, preamble=preamble)}")


if __name__ == "__main__":
    typer.run(main)
