"""Synthetic stores: vectors of a fake checkpoint identity, so store logic is tested without a model."""
from __future__ import annotations

import pytest
from store_helpers import SHAPE, docs_for, identity

from clara_ray.store import IndexConfig, StoreWriter
from clara_ray.store.synthetic import synthetic_docs


@pytest.fixture
def vectors():
    return synthetic_docs(120, SHAPE, chunk_seed=7, topics=10)


@pytest.fixture
def build_store(tmp_path, vectors):
    """Publish docs 0..count-1 in shards of `shard` docs; returns the store path."""
    def build(count: int = 60, shard: int = 25, cfg: IndexConfig | None = None):
        root = tmp_path / "store"
        with StoreWriter(root, identity(), cfg or IndexConfig(threads=1)) as writer:
            for lo in range(0, count, shard):
                hi = min(lo + shard, count)
                writer.add(vectors[lo:hi], docs_for(lo, hi - lo))
            writer.publish()
        return root
    return build

