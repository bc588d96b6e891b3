"""Immutable shards: the exact fp16 (n, hidden) vectors of a batch of documents plus their metadata.

A shard is a directory `shards/<name>/` holding `vectors.npy` (float16, (m, n, hidden), opened
memory-mapped), `metadata.parquet` (id, text, source, chunk) and `shard.json` (who wrote it and
checksums). It is written under a temporary name and renamed into place, so a shard directory
either exists complete or not at all; a crash mid-write leaves only a `.tmp-*` directory to sweep.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from clara_ray.config import validation_problems
from clara_ray.store.errors import StoreError
from clara_ray.store.manifest import ShardEntry, sha256_file

SHARDS_DIR = "shards"
VECTORS = "vectors.npy"
METADATA = "metadata.parquet"
SHARD_INFO = "shard.json"
_TMP_PREFIX = ".tmp-"

METADATA_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("chunk", pa.int64())]
)


@dataclass
class DocRecord:
    id: str
    text: str
    source: str = ""
    chunk: int | None = None


class ShardInfo(ShardEntry):
    """What a shard directory says of itself: its manifest entry and who wrote its vectors."""

    fingerprint: str  # of the checkpoint whose compressor wrote the vectors


def to_fp16(vectors: np.ndarray, what: str) -> np.ndarray:
    """fp16 halves the store; refuse values fp16 cannot hold rather than storing inf."""
    out = np.asarray(vectors).astype(np.float16)
    if not np.isfinite(out).all():
        raise StoreError(f"{what}: vectors have values outside float16 range (or NaN); cannot store them")
    return out


def write_shard(shards_root: Path, vectors: np.ndarray, docs: list[DocRecord], fingerprint: str) -> ShardEntry:
    """Write one shard atomically and return its manifest entry."""
    if vectors.ndim != 3 or len(vectors) != len(docs):
        raise StoreError(f"shard needs (m, n, hidden) vectors for {len(docs)} docs, got shape {vectors.shape}")
    name = f"shard-{uuid.uuid4().hex[:16]}"
    tmp = shards_root / f"{_TMP_PREFIX}{name}"
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / VECTORS, to_fp16(vectors, name))
        table = pa.table(
            {
                "id": [d.id for d in docs],
                "text": [d.text for d in docs],
                "source": [d.source for d in docs],
                "chunk": [d.chunk for d in docs],
            },
            schema=METADATA_SCHEMA,
        )
        pq.write_table(table, tmp / METADATA)
        entry = ShardEntry(
            name=name,
            num_docs=len(docs),
            vectors_sha256=sha256_file(tmp / VECTORS),
            metadata_sha256=sha256_file(tmp / METADATA),
        )
        (tmp / SHARD_INFO).write_text(ShardInfo(fingerprint=fingerprint, **entry.model_dump()).model_dump_json())
        tmp.rename(shards_root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def sweep_partial_shards(shards_root: Path) -> None:
    """Remove temporary shard directories a crashed writer left behind."""
    for tmp in shards_root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def list_shard_dirs(shards_root: Path) -> list[Path]:
    if not shards_root.is_dir():
        return []
    return sorted(p for p in shards_root.iterdir() if p.is_dir() and not p.name.startswith(_TMP_PREFIX))


def read_shard_info(shard_dir: Path) -> tuple[str, ShardEntry]:
    """(writer's checkpoint fingerprint, manifest entry) of a complete shard directory."""
    path = shard_dir / SHARD_INFO
    try:
        info = ShardInfo.model_validate_json(path.read_bytes())  # bytes: pydantic names bad UTF-8 too
    except OSError as exc:
        raise StoreError(f"{path}: unreadable shard info: {exc}") from None
    except ValidationError as exc:
        raise StoreError(f"{path}: unreadable shard info: {validation_problems(exc, limit=3)}") from None
    return info.fingerprint, ShardEntry.model_validate(info.model_dump(exclude={"fingerprint"}))


def verify_shard(shard_dir: Path, entry: ShardEntry) -> None:
    """Checksums of both files against the manifest: any flipped byte is a StoreError naming the file."""
    for filename, expected in ((VECTORS, entry.vectors_sha256), (METADATA, entry.metadata_sha256)):
        path = shard_dir / filename
        if not path.is_file():
            raise StoreError(f"{path}: shard file missing")
        actual = sha256_file(path)
        if actual != expected:
            raise StoreError(f"{path}: corrupted shard (sha256 {actual[:12]} != manifest {expected[:12]})")


def open_vectors(shard_dir: Path, entry: ShardEntry, shape: tuple[int, int]) -> np.ndarray:
    """Memory-map a shard's vectors and check their shape: the OS pages in only what is read."""
    path = shard_dir / VECTORS
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: corrupted shard, cannot map vectors: {exc}") from None
    expected = (entry.num_docs, *shape)
    if array.shape != expected or array.dtype != np.float16:
        raise StoreError(f"{path}: corrupted shard, vectors {array.dtype}{array.shape} != float16{expected}")
    return array


def read_metadata(shard_dir: Path, entry: ShardEntry) -> pa.Table:
    path = shard_dir / METADATA
    try:
        table = pq.read_table(path, schema=METADATA_SCHEMA)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: corrupted shard metadata: {exc}") from None
    if table.num_rows != entry.num_docs:
        raise StoreError(f"{path}: {table.num_rows} rows, manifest says {entry.num_docs}")
    return table
