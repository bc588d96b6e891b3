"""`python -m pipelines.precompress --checkpoint <CLaRa dir> --corpus <jsonl|parquet|dir> --out <store>`.

Compresses a corpus once, offline, into a store of memory-token vectors (see README, "Precompress a
corpus"). Runs under `ray job submit`; a rerun resumes and adds only documents not yet stored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from pipelines.cli_step import cli_step


@cli_step
def main(
    checkpoint: Annotated[Path, typer.Option(help="CLaRa checkpoint directory (save_pretrained)")],
    corpus: Annotated[Path, typer.Option(help="JSONL / Parquet file, or a directory of them (fields: text, id?, source?, chunk?)")],
    out: Annotated[Path, typer.Option(help="store directory (created, or extended incrementally)")],
    config: Annotated[Optional[Path], typer.Option(help="precompress YAML, e.g. configs/precompress.yaml")] = None,
    overrides: Annotated[Optional[List[str]], typer.Argument(help="key.sub=value overrides, e.g. actors=4 index.kind=hnsw")] = None,
) -> None:
    """Compress a corpus with a CLaRa checkpoint into a FAISS store (resumable, incremental).

    The chunks of `clara ingest ... --out runs/ingest`, compressed by the stage-3
    model that `clara train --stage end_to_end` exports (CPU profile):

      clara precompress --checkpoint runs/cpu-end-to-end/model \\
        --corpus runs/ingest/raw_knowledge.jsonl --out runs/store

    Documents longer than the model's window (doc_max_length tokens) are
    truncated and counted in the summary; ingest's chunk.max_tokens keeps
    chunks within it.
    """
    from clara_ray.config import load_config
    from clara_ray.store.job import PrecompressConfig, run_precompress

    summary = run_precompress(checkpoint, corpus, out, load_config(PrecompressConfig, config, overrides))
    typer.echo(json.dumps({"store": str(out), **summary}))
    if summary["failed"]:  # the others are stored and published; the run still did not do it all
        typer.echo(f"error: {len(summary['failed'])} documents were not stored (see 'failed'); fix or remove"
                   " them and rerun to add them", err=True)
        raise typer.Exit(2)


if __name__ == "__main__":
    typer.run(main)
