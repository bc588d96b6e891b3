"""`python -m pipelines.precompress --checkpoint <CLaRa dir> --corpus <jsonl|parquet|dir> --out <store>`.

Compresses a corpus once, offline, into a store of memory-token vectors (see README, "Precompress a
corpus"). Runs under `ray job submit`; a rerun resumes and adds only documents not yet stored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def main(
    checkpoint: Annotated[Path, typer.Option(help="CLaRa checkpoint directory (save_pretrained)")],
    corpus: Annotated[Path, typer.Option(help="JSONL / Parquet file, or a directory of them (fields: text, id?, source?, chunk?)")],
    out: Annotated[Path, typer.Option(help="store directory (created, or extended incrementally)")],
    config: Annotated[Optional[Path], typer.Option(help="precompress YAML, e.g. configs/precompress.yaml")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides, e.g. actors=4 index.kind=hnsw")] = None,
) -> None:
    """Compress a corpus with a CLaRa checkpoint into a FAISS store (resumable, incremental)."""
    from clara_ray.config import ConfigError, load_config
    from clara_ray.store import StoreError
    from clara_ray.store.job import PrecompressConfig, run_precompress

    try:
        cfg = load_config(PrecompressConfig, config, overrides)
        summary = run_precompress(checkpoint, corpus, out, cfg)
    except (ConfigError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"store": str(out), **summary}))
    if summary["failed"]:  # the others are stored and published; the run still did not do it all
        typer.echo(f"error: {len(summary['failed'])} documents were not stored (see 'failed'); fix or remove"
                   " them and rerun to add them", err=True)
        raise typer.Exit(2)


if __name__ == "__main__":
    typer.run(main)
