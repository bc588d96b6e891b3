"""Open a published store and search it (docs/ARCHITECTURE.md, "Store API").

    store = CompressedStore.open(path, expect_checkpoint=None)
    hits = store.search(query_vectors, k)   # (Q, n*hidden) fp32, L2-normalised
    hits.ids, hits.scores, hits.texts, hits.sources, hits.vectors  # vectors: (Q, k, n, hidden) fp16
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from clara_ray.store import layout
from clara_ray.store.errors import StoreError
from clara_ray.store.index import VectorIndex, normalize
from clara_ray.store.manifest import CheckpointIdentity, Manifest, ShardEntry, check_checkpoint, read_manifest, sha256_file
from clara_ray.store.shards import SHARDS_DIR, open_vectors, read_metadata, verify_shard


@dataclass
class SearchHits:
    ids: np.ndarray  # (Q, k) object array of document ids
    scores: np.ndarray  # (Q, k) float32 cosine
    texts: list[list[str]]
    sources: list[list[str]]
    chunks: list[list[int | None]]
    vectors: np.ndarray  # (Q, k, n, hidden) float16, exact, for the generator


class ShardSet:
    """The memory-mapped fp16 vectors of a list of shards, addressed by global row."""

    def __init__(self, root: Path, entries: list[ShardEntry], shape: tuple[int, int], verify: bool):
        self.shape = shape
        self.arrays: list[np.ndarray] = []
        # one table per shard, each in one chunk: Table.take over a table concatenated from
        # hundreds of shards costs O(N) per call (~19 ms at 1M docs), per shard it is O(k)
        self.tables: list[pa.Table] = []
        for entry in entries:
            shard_dir = root / SHARDS_DIR / entry.name
            if verify:
                verify_shard(shard_dir, entry)
            self.arrays.append(open_vectors(shard_dir, entry, shape))
            self.tables.append(read_metadata(shard_dir, entry).combine_chunks())
        sizes = [len(a) for a in self.arrays]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _by_shard(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(shard, positions in `rows`, rows local to the shard) for each shard `rows` touch."""
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            positions = np.nonzero(shard_of == shard)[0]
            yield int(shard), positions, rows[positions] - self.starts[shard]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """fp16 (len(rows), n, hidden) for global rows (all valid)."""
        out = np.empty((len(rows), *self.shape), dtype=np.float16)
        for shard, positions, local in self._by_shard(rows):
            out[positions] = self.arrays[shard][local]
        return out

    def metadata(self, rows: np.ndarray, columns: tuple[str, ...]) -> dict[str, list]:
        """The named metadata columns' values for global rows (all valid), in the order of `rows`."""
        out: dict[str, list] = {name: [None] * len(rows) for name in columns}
        for shard, positions, local in self._by_shard(rows):
            taken = self.tables[shard].select(list(columns)).take(pa.array(local)).to_pydict()
            for name in columns:
                for position, value in zip(positions.tolist(), taken[name]):
                    out[name][position] = value
        return out

    def column(self, name: str) -> list:
        return [value for table in self.tables for value in table.column(name).to_pylist()]

    def exact(self, rows: np.ndarray) -> np.ndarray:
        return normalize(self.gather(rows))

    def iter_normalised(self, start: int = 0, batch: int = 8192) -> Iterator[np.ndarray]:
        for lo in range(start, len(self), batch):
            yield self.exact(np.arange(lo, min(lo + batch, len(self))))

    def sample_normalised(self, size: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self), size=min(size, len(self)), replace=False))
        return self.exact(rows)


def published_version(root: Path, expect_checkpoint: CheckpointIdentity | str | Path | None = None,
                      ) -> tuple[Path, Manifest]:
    """The directory CURRENT names and its manifest; StoreError when there is none or another
    checkpoint made it."""
    if not root.is_dir():
        raise StoreError(f"store {root} does not exist (precompress builds one)")
    version_dir = layout.current_version_dir(root)
    if version_dir is None:
        raise StoreError(f"{root}: no published store (missing {layout.CURRENT})")
    manifest = read_manifest(version_dir)
    check_checkpoint(manifest, expect_checkpoint, root)
    return version_dir, manifest


class CompressedStore:
    def __init__(self, root: Path, manifest: Manifest, shards: ShardSet, index: VectorIndex):
        self.root, self.manifest, self.shards, self.index = root, manifest, shards, index
        self.version_dir = root / layout.VERSIONS / layout.version_name(manifest.version)

    @classmethod
    def open(cls, path: str | Path, expect_checkpoint: CheckpointIdentity | str | Path | None = None,
             verify: bool = True, use_gpu: bool = False) -> "CompressedStore":
        """Open the published version; StoreError on a missing, corrupted or mismatched store.

        `expect_checkpoint`: an identity (see `checkpoint_identity`), a checkpoint directory or its fingerprint.
        `verify=False` skips the sha256 of every shard (shapes are still checked) for fast restarts.
        """
        root = Path(path)
        version_dir, manifest = published_version(root, expect_checkpoint)
        ckpt = manifest.checkpoint
        shards = ShardSet(root, manifest.shards, (ckpt.num_memory_tokens, ckpt.hidden_size), verify)
        if len(shards) != manifest.num_docs:
            raise StoreError(f"{version_dir}: shards hold {len(shards)} docs, manifest says {manifest.num_docs}")
        index_path = version_dir / manifest.index.file
        if not index_path.is_file():
            raise StoreError(f"{index_path}: index file missing")
        if verify and sha256_file(index_path) != manifest.index.sha256:
            raise StoreError(f"{index_path}: corrupted index (checksum differs from manifest)")
        index = VectorIndex.load(index_path, manifest.index.params, use_gpu)
        if index.ntotal != manifest.num_docs:
            raise StoreError(f"{index_path}: index holds {index.ntotal} vectors, manifest says {manifest.num_docs}")
        return cls(root, manifest, shards, index)

    def __len__(self) -> int:
        return self.manifest.num_docs

    @property
    def ids(self) -> list[str]:
        return self.shards.column("id")

    def search(self, query_vectors: np.ndarray, k: int) -> SearchHits:
        queries = np.asarray(query_vectors)
        if queries.ndim == 3:
            queries = queries.reshape(len(queries), -1)
        if queries.ndim != 2 or queries.shape[1] != self.manifest.dim:
            raise StoreError(f"query vectors must be (Q, {self.manifest.dim}), got {np.asarray(query_vectors).shape}")
        k = min(k, len(self))
        scores, rows = self.index.search(normalize(queries), k, exact=self.shards.exact)
        return self._hits(scores, rows)

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> SearchHits:
        num_q, k = rows.shape
        valid = rows >= 0
        columns = {}
        for name, values in self.shards.metadata(rows[valid], ("id", "text", "source", "chunk")).items():
            grid = np.full((num_q, k), None, dtype=object)
            grid[valid] = values
            columns[name] = grid
        vectors = np.zeros((num_q, k, *self.shards.shape), dtype=np.float16)
        vectors[valid] = self.shards.gather(rows[valid])
        return SearchHits(
            ids=columns["id"], scores=scores, texts=columns["text"].tolist(),
            sources=columns["source"].tolist(), chunks=columns["chunk"].tolist(), vectors=vectors,
        )
