"""`python -m pipelines.ingest --input DIR --out DIR [--config yaml] [key=value ...]` (also `clara ingest`).

Turns a folder of documents into the three training stages' JSONL files on the Ray cluster the
process is attached to (`ray job submit` sets RAY_ADDRESS) or a local one. Rerunning with the
same --out resumes: finished work (keyed by content hash) is skipped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def main(
    input: Annotated[Optional[Path], typer.Option(help="folder of documents (PDF, DOCX, PPTX, HTML, Markdown, JPG/PNG)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (JSONL files, images, work/ cache)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="ingest YAML, e.g. configs/ingest.yaml")] = None,
    until: Annotated[Optional[str], typer.Option(help="extract | caption | synthesize (default: everything)")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides")] = None,
) -> None:
    """Extract, caption, chunk and synthesize training data from documents."""
    from clara_ray.config import ConfigError, load_config
    from clara_ray.ingest.config import IngestConfig

    extra = list(overrides or [])
    extra += [f"{name}={value}" for name, value in (("input", input), ("out", out), ("until", until)) if value]
    try:
        cfg = load_config(IngestConfig, config, extra)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    from clara_ray.ingest.pipeline import IngestError, run_ingest

    try:
        summary = run_ingest(cfg)
    except IngestError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    typer.run(main)
