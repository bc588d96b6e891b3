"""`python -m pipelines.add --store DIR --input DOCS` (also `clara add`): add documents to a store.

Extracts and chunks the documents (ingest), compresses the chunks the store does not hold yet
(precompress) and publishes a new version; a server on that store serves them once its
Retrievers' watch interval has passed (docs/operations.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from pipelines.cli_step import cli_step


@cli_step
def main(
    store: Annotated[Path, typer.Option(help="store directory to add to (it need not exist with --checkpoint)")],
    input: Annotated[Path, typer.Option(help="folder of new documents (PDF, DOCX, PPTX, HTML, Markdown, JPG/PNG)")],
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="CLaRa checkpoint (default: the one the store was built with)")] = None,
    work: Annotated[Optional[Path], typer.Option(help="ingest output/cache folder (default: STORE/ingest)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML with `ingest:` and `precompress:` sections")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(
        help="overrides, e.g. ingest.extract.workers=1 precompress.actors=1")] = None,
) -> None:
    """Add documents to a store, even one a server answers from: ingest
    extraction and chunking, then an incremental precompress. Chunks already
    stored (same content) are skipped; `clara remove` takes documents out.

      clara add --store runs/store --input examples/documents
    """
    from clara_ray.config import load_config
    from clara_ray.store.updates import AddConfig, run_add

    summary = run_add(store, input, load_config(AddConfig, config, overrides), checkpoint, work)
    typer.echo(json.dumps({"store": str(store), **summary}))
    if summary["failed"]:
        typer.echo(f"error: {len(summary['failed'])} chunks were not stored (see 'failed')", err=True)
        raise typer.Exit(2)


if __name__ == "__main__":
    typer.run(main)
