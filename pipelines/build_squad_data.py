"""`python -m pipelines.build_squad_data --squad <squad.json> --out <dir>`: stage JSONL from SQuAD.

Writes pretrain_data.jsonl, instruction_data.jsonl and end_to_end_data.jsonl for the first
`--train-articles` articles, and heldout_*.jsonl for the remaining ones (split by article).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli_step import cli_step


@cli_step
def main(
    squad: Annotated[Path, typer.Option(help="SQuAD-format JSON (data -> paragraphs -> qas)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    train_articles: Annotated[Optional[int], typer.Option(help="articles for training; the rest held out")] = None,
    use_train_articles: Annotated[Optional[int], typer.Option(
        help="build the training files from only the first N training articles (the held-out split is unchanged)",
        min=1)] = None,
    instruct_docs: Annotated[int, typer.Option(help="documents per stage-2 record (gold + negatives)")] = 5,
    end_to_end_docs: Annotated[int, typer.Option(help="candidates per stage-3 record (gold + negatives)")] = 20,
    max_questions: Annotated[int, typer.Option(help="questions used per paragraph")] = 5,
    reconstruction: Annotated[bool, typer.Option(
        help="stage 1 also reconstructs every paragraph (target: the paragraph as the compressor reads it)")] = False,
    reconstruction_window: Annotated[Optional[int], typer.Option(
        help="also write pretrain_windows.jsonl: every N-token window of each paragraph to reconstruct "
             "(a stage-1 warm-up; needs --doc-max-length)")] = None,
    doc_max_length: Annotated[Optional[int], typer.Option(
        help="the model's document window in tokens: questions answered only past it are left out")] = None,
    backbone: Annotated[str, typer.Option(help="whose tokenizer measures --doc-max-length")] = "smollm2-135m",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build the three training stages' JSONL from SQuAD-format paragraphs and questions.

    Splits by article: training stages from the first --train-articles, held-out
    files from the rest. From the bundled SQuAD sample (any SQuAD v1.1 JSON works):

      clara build-squad-data --squad examples/data/sample_squad.json \\
        --out runs/squad-data
    """
    from clara_ray.data.squad import TokenWindow, build_squad_data
    from clara_ray.resources import resolve_path

    if reconstruction_window and not doc_max_length:
        raise typer.BadParameter("needs --doc-max-length (the windows cover what the compressor reads)",
                                 param_hint="--reconstruction-window")
    window = TokenWindow(backbone, doc_max_length) if doc_max_length else None
    stats = build_squad_data(resolve_path(squad), out, train_articles, instruct_docs, end_to_end_docs, max_questions,
                             seed, window, reconstruction, reconstruction_window, use_train_articles)
    for name, count in stats.files.items():
        typer.echo(f"{out / name}: {count} records")
    if window:
        for split, count in stats.answers_past_window.items():
            fate = "left out of training" if split == "train" else "kept, so evaluations from these files count them"
            typer.echo(f"{split.rstrip('_')}: {count} questions answered only past {doc_max_length} tokens ({fate})")


if __name__ == "__main__":
    typer.run(main)
