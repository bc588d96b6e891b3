"""`python -m pipelines.remove --store DIR --source FILE` (also `clara remove`): remove documents.

Publishes a new store version without the chunks of the given sources (ingest's paths relative to
the input folder) or ids; a server on that store stops citing them within its watch interval.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from pipelines.cli_step import cli_step


@cli_step
def main(
    store: Annotated[Path, typer.Option(help="store directory")],
    source: Annotated[Optional[List[str]], typer.Option(help="remove every chunk of this source (repeatable)")] = None,
    id: Annotated[Optional[List[str]], typer.Option(help="remove the document with this id (repeatable)")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="precompress YAML: its `index` settings for the rebuild")] = None,
) -> None:
    """Remove documents from a store: a new version without them, its index
    rebuilt (older versions keep their files until deleted by hand).

      clara remove --store runs/store --source water_cycle.md
    """
    from clara_ray.config import InputError, load_config
    from clara_ray.store.job import PrecompressConfig
    from clara_ray.store.updates import run_remove

    if not source and not id:
        raise InputError("nothing to remove: give --source and/or --id")
    summary = run_remove(store, list(id or []), list(source or []), load_config(PrecompressConfig, config).index)
    typer.echo(json.dumps({"store": str(store), **summary}))


if __name__ == "__main__":
    typer.run(main)
