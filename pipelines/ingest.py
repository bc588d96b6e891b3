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

from pipelines.cli_step import cli_step


@cli_step
def main(
    input: Annotated[Optional[Path], typer.Option(help="folder of documents (PDF, DOCX, PPTX, HTML, Markdown, JPG/PNG)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (JSONL files, images, work/ cache)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="ingest YAML, e.g. configs/ingest.yaml")] = None,
    until: Annotated[Optional[str], typer.Option(help="extract | caption | synthesize (default: everything)")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides")] = None,
) -> None:
    """Extract, caption, chunk and synthesize training data from documents.

    Writes pretrain_data.jsonl, instruction_data.jsonl, end_to_end_data.jsonl
    (the training stages' data) and raw_knowledge.jsonl (the chunks: the corpus
    to precompress). Questions come from the API in OPENAI_BASE_URL and
    CLARA_TEXT_MODEL, else from the bundled SmolLM2 served locally. On the
    bundled example documents:

      clara ingest --input examples/documents --out runs/ingest
    """
    from clara_ray.config import load_config
    from clara_ray.ingest.config import IngestConfig
    from clara_ray.ingest.pipeline import run_ingest

    extra = list(overrides or [])
    extra += [f"{name}={value}" for name, value in (("input", input), ("out", out), ("until", until)) if value]
    summary = run_ingest(load_config(IngestConfig, config, extra))
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    typer.run(main)
