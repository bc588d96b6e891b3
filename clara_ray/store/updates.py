"""Add documents to a store that a server answers from, and remove them (docs/operations.md).

`run_add`: ingest's extraction and chunking of the new documents (no question synthesis: only
the chunks are needed), then an incremental precompress of those chunks into the same store,
published as one new version, which running Retrievers swap in within their watch interval.
Chunk ids are content hashes (ingest's `content_key`), so a chunk already stored is skipped and
an interrupted add resumes where it stopped.

`run_remove`: a new version without the given documents (StoreWriter.remove).
"""
from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from clara_ray.config import InputError
from clara_ray.ingest.config import IngestConfig
from clara_ray.store import layout
from clara_ray.store.builder import StoreWriter
from clara_ray.store.errors import StoreError
from clara_ray.store.index import IndexConfig
from clara_ray.store.job import PrecompressConfig, checkpoint_config, run_precompress
from clara_ray.store.manifest import read_manifest
from clara_ray.store.store import CompressedStore

log = logging.getLogger(__name__)

WORK_DIR = "ingest"  # inside the store: ingest's outputs and cache for the documents added


class AddConfig(BaseModel):
    """configs/add.yaml: the two steps' settings. Ingest runs through chunking whatever `ingest.until`
    says; `ingest.chunk` defaults to the checkpoint's tokenizer and document window."""
    model_config = ConfigDict(extra="forbid")

    ingest: IngestConfig = Field(default_factory=IngestConfig)
    precompress: PrecompressConfig = Field(default_factory=PrecompressConfig)


def published_checkpoint(store: Path) -> Path:
    """The checkpoint directory the store's published version was built with."""
    version = layout.current_version_dir(store)
    if version is None:
        raise StoreError(f"{store}: no published store version; give the checkpoint to build it with (--checkpoint)")
    path = Path(read_manifest(version).checkpoint.path)
    if not path.is_dir():
        raise StoreError(f"{store} was built with checkpoint {path}, which is not there; give it (--checkpoint)")
    return path


def ingest_config(cfg: IngestConfig, checkpoint: Path, documents: Path, work: Path) -> IngestConfig:
    """Ingest through chunking, into `work`, with chunks that fit the checkpoint's window unless set."""
    model = checkpoint_config(checkpoint)
    fitted = {name: value for name, value in (("tokenizer", model.backbone), ("max_tokens", model.doc_max_length))
              if name not in cfg.chunk.model_fields_set}
    return cfg.model_copy(update=dict(input=str(documents), out=str(work), until="caption",
                                      chunk=cfg.chunk.model_copy(update=fitted)))


def run_add(store: str | Path, documents: str | Path, cfg: AddConfig, checkpoint: str | Path | None = None,
            work: str | Path | None = None) -> dict:
    """Extract and chunk `documents`, compress the chunks the store lacks, publish; returns a summary."""
    from clara_ray.ingest.outputs import ERRORS, RAW
    from clara_ray.ingest.pipeline import run_ingest

    store = Path(store)
    checkpoint = Path(checkpoint) if checkpoint else published_checkpoint(store)
    work = Path(work) if work else store / WORK_DIR
    ingested = run_ingest(ingest_config(cfg.ingest, checkpoint, Path(documents), work))
    if not ingested.get("chunks"):
        raise InputError(f"{documents}: no text to add ({ingested['files']} files, {ingested['errors']} errors: "
                         f"see {work / ERRORS})")
    summary = run_precompress(checkpoint, work / RAW, store, cfg.precompress)
    return {"files": ingested["files"], "chunks": ingested["chunks"], "ingest_errors": ingested["errors"], **summary}


def run_remove(store: str | Path, ids: list[str], sources: list[str], index: IndexConfig | None = None) -> dict:
    """Publish a version without the documents that have one of `ids` or come from one of `sources`."""
    current = CompressedStore.open(store, verify=False)
    stored = list(zip(current.shards.column("id"), current.shards.column("source")))
    unknown = sorted(set(ids) - {i for i, _ in stored}) + sorted(set(sources) - {s for _, s in stored})
    if unknown:
        raise StoreError(f"{store}: no stored document has the id or source {', '.join(map(repr, unknown))}")
    drop = {i for i, source in stored if i in ids or source in sources}
    with StoreWriter(store, current.manifest.checkpoint, index) as writer:
        removed = writer.remove(drop)
        version = writer.publish()
        total = writer.current.num_docs
    log.info("removed %d documents: version %d holds %d", removed, version, total)
    return {"version": version, "removed": removed, "total_docs": total}
