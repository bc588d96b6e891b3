"""Write a store: append shards (resumable), then publish a new version atomically.

    with StoreWriter(out, identity, index_cfg) as writer:
        writer.add(vectors, docs)      # skips ids already stored; each call = one atomic shard
        writer.publish()               # index over all shards -> versions/vN, then CURRENT -> vN
        writer.remove(ids); writer.publish()   # a version without those documents (index rebuilt)

Shards written but not yet published (a crashed run) are picked up by the next writer with the same
checkpoint, so a rerun compresses only what is missing and never stores an id twice.
"""
from __future__ import annotations

import fcntl
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from clara_ray.store import layout
from clara_ray.store.errors import StoreError
from clara_ray.store.index import IndexConfig, VectorIndex, resolve_kind
from clara_ray.store.manifest import (
    CheckpointIdentity, IndexEntry, Manifest, ShardEntry, check_checkpoint, read_manifest, sha256_file,
    write_manifest,
)
from clara_ray.store.shards import (
    METADATA, SHARDS_DIR, DocRecord, list_shard_dirs, open_vectors, read_metadata, read_shard_info,
    sweep_partial_shards, verify_shard, write_shard,
)
from clara_ray.store.store import ShardSet

log = logging.getLogger(__name__)


class StoreWriter:
    """The single writer of a store directory (an exclusive file lock keeps it single)."""

    def __init__(self, root: str | Path, identity: CheckpointIdentity, index_cfg: IndexConfig | None = None):
        self.root = Path(root)
        self.identity = identity
        self.index_cfg = index_cfg or IndexConfig()
        self.shards_root = self.root / SHARDS_DIR
        self.shards_root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / layout.LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreError(f"{self.root}: another writer holds {layout.LOCK}") from None
        current = layout.current_version_dir(self.root)
        self.current: Manifest | None = read_manifest(current) if current else None
        if self.current is not None:
            check_checkpoint(self.current, identity, self.root)
        sweep_partial_shards(self.shards_root)
        self.published: list[ShardEntry] = list(self.current.shards) if self.current else []
        published_ids = self._read_ids(self.published)
        self.staged: list[ShardEntry] = self._adopt_staged_shards(published_ids)
        self.known_ids: set[str] = published_ids | self._read_ids(self.staged)
        self.removed = False  # documents were removed: the next version's index is rebuilt

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()  # closing the descriptor releases the flock

    @property
    def shape(self) -> tuple[int, int]:
        return (self.identity.num_memory_tokens, self.identity.hidden_size)

    def _adopt_staged_shards(self, published_ids: set[str]) -> list[ShardEntry]:
        """Complete shards from an unpublished run of this checkpoint; anything else is discarded,
        including a published shard's copy from a removal that never published (its documents are stored)."""
        listed = {e.name for e in self.published}
        staged = []
        for shard_dir in list_shard_dirs(self.shards_root):
            if shard_dir.name in listed:
                continue
            try:
                fingerprint, entry = read_shard_info(shard_dir)
                if fingerprint != self.identity.fingerprint:
                    raise StoreError(f"{shard_dir}: written by another checkpoint ({fingerprint[:12]})")
                verify_shard(shard_dir, entry)
                if not published_ids.isdisjoint(self._read_ids([entry])):
                    raise StoreError(f"{shard_dir}: holds published documents (left by an unfinished removal)")
            except StoreError as exc:
                log.warning("discarding unpublished shard: %s", exc)
                shutil.rmtree(shard_dir, ignore_errors=True)
                continue
            staged.append(entry)
        return staged

    def _read_ids(self, entries: list[ShardEntry]) -> set[str]:
        ids: set[str] = set()
        for entry in entries:
            path = self.shards_root / entry.name / METADATA
            ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
        return ids

    def add(self, vectors: np.ndarray, docs: list[DocRecord]) -> int:
        """Append one shard of the docs whose ids are new; returns how many were stored."""
        vectors = np.asarray(vectors)
        if vectors.shape[1:] != self.shape or len(vectors) != len(docs):
            raise StoreError(
                f"expected {len(docs)} vectors of shape {self.shape} for checkpoint {self.identity.path},"
                f" got {vectors.shape}"
            )
        keep = []
        for i, doc in enumerate(docs):
            if doc.id not in self.known_ids:
                self.known_ids.add(doc.id)
                keep.append(i)
        if not keep:
            return 0
        entry = write_shard(self.shards_root, vectors[keep], [docs[i] for i in keep], self.identity.fingerprint)
        self.staged.append(entry)
        return len(keep)

    def remove(self, ids: set[str]) -> int:
        """Leave the documents with these ids out of the next published version; returns how many there were.

        Shards are immutable and older versions still list them, so each shard holding such a
        document is copied without it; the index cannot drop rows, so `publish` rebuilds it.
        """
        count, copies = 0, []
        for group in ("published", "staged"):
            kept = []
            for entry in getattr(self, group):
                shard_dir = self.shards_root / entry.name
                table = read_metadata(shard_dir, entry)
                keep = np.array([i not in ids for i in table.column("id").to_pylist()], dtype=bool)
                count += int((~keep).sum())
                if keep.all():
                    kept.append(entry)
                elif keep.any():
                    rows = table.filter(keep).to_pylist()
                    docs = [DocRecord(id=r["id"], text=r["text"], source=r["source"], chunk=r["chunk"]) for r in rows]
                    vectors = open_vectors(shard_dir, entry, self.shape)[keep]
                    copies.append(write_shard(self.shards_root, vectors, docs, self.identity.fingerprint))
            if group == "staged":  # unpublished, so no version lists the originals: a crash must not revive them
                for entry in getattr(self, group):
                    if entry not in kept:
                        shutil.rmtree(self.shards_root / entry.name, ignore_errors=True)
            setattr(self, group, kept)
        self.staged += copies  # new shards: staged, as an add's are, until published
        self.known_ids -= ids
        self.removed = self.removed or count > 0
        return count

    def publish(self, rebuild: bool = False, build_index: "IndexBuilder | None" = None) -> int:
        """Make every stored shard searchable as a new version; returns its number.

        The index grows incrementally (only new vectors are added) while its kind stays the same;
        `rebuild=True` or a change of kind (the corpus outgrew it) re-trains it from the shards.
        `build_index` (default `write_index`, here) builds and writes it, e.g. in a Ray task on a GPU node.
        """
        rebuild = rebuild or self.removed
        if not self.staged and self.current is not None and not rebuild:
            return self.current.version
        entries = self.published + self.staged
        shards = ShardSet(self.root, entries, self.shape, verify=False)
        if len(shards) == 0:
            raise StoreError(f"{self.root}: nothing to publish (no documents)")
        number = layout.next_version_number(self.root)
        name = layout.version_name(number)
        versions = self.root / layout.VERSIONS
        versions.mkdir(exist_ok=True)
        tmp = versions / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        # absolute paths: the builder may run in another process, on another node of the shared volume
        kind, params = (build_index or write_index)(self.root.resolve(), entries, self.shape, self.index_cfg,
                                                    self.current, rebuild, (tmp / layout.INDEX_FILE).resolve())
        manifest = Manifest(
            version=number,
            created=datetime.now(timezone.utc).isoformat(),
            checkpoint=self.identity,
            num_docs=len(shards),
            shards=entries,
            index=IndexEntry(kind=kind, file=layout.INDEX_FILE, params=params,
                             sha256=sha256_file(tmp / layout.INDEX_FILE)),
        )
        write_manifest(tmp, manifest)
        tmp.rename(versions / name)
        layout.swap_current(self.root, name)
        self.current, self.published, self.staged, self.removed = manifest, entries, [], False
        log.info("published %s: %d docs, %s index", name, manifest.num_docs, kind)
        return number


# (root, shard entries, (n, hidden), config, published manifest or None, rebuild, target file) -> (kind, params)
IndexBuilder = Callable[[Path, list[ShardEntry], tuple[int, int], IndexConfig, Manifest | None, bool, Path],
                        tuple[str, dict]]


def write_index(root: Path, entries: list[ShardEntry], shape: tuple[int, int], cfg: IndexConfig,
                previous: Manifest | None, rebuild: bool, target: Path) -> tuple[str, dict]:
    """Build the index over the shards `entries` of the store at `root` and write it, as a CPU index, to
    `target`; returns its (kind, params). Files in, a file out: it runs wherever the store is mounted."""
    shards = ShardSet(root, entries, shape, verify=False)
    index = _index_for(root, shards, cfg, previous, rebuild)
    index.save(target)
    return index.kind, index.params


def _index_for(root: Path, shards: ShardSet, cfg: IndexConfig, previous: Manifest | None,
               rebuild: bool) -> VectorIndex:
    """`previous`'s index extended by the new rows while its kind still fits the corpus, else a new one."""
    dim = shards.shape[0] * shards.shape[1]
    kind = resolve_kind(cfg, len(shards), dim)
    if previous is not None and not rebuild and previous.index.kind == kind:
        old_dir = root / layout.VERSIONS / layout.version_name(previous.version)
        index = VectorIndex.load(old_dir / previous.index.file, previous.index.params, cfg.use_gpu)
        for chunk in shards.iter_normalised(start=previous.num_docs):
            index.add(chunk)
        return index
    sample = shards.sample_normalised(cfg.train_size) if kind == "ivfpq" else None
    return VectorIndex.build(cfg, dim, len(shards), sample, shards.iter_normalised())
