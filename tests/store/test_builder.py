import os

import numpy as np
import pytest
from store_helpers import docs_for, identity

from clara_ray.store import CompressedStore, IndexConfig, StoreError, StoreWriter, normalize
from clara_ray.store.layout import CURRENT, INDEX_FILE, VERSIONS
from clara_ray.store.shards import SHARDS_DIR

CFG = IndexConfig(threads=1)


def test_incremental_add_keeps_old_shards_and_skips_known_ids(build_store, vectors):
    root = build_store(count=50, shard=25)
    before = {p.name: p.stat().st_mtime_ns for p in (root / SHARDS_DIR).iterdir()}
    reader = CompressedStore.open(root)
    with StoreWriter(root, identity(), CFG) as writer:
        # docs 40..89: 40..49 are already stored and must not be stored again
        assert writer.add(vectors[40:90], docs_for(40, 50)) == 40
        assert writer.publish() == 2
    store = CompressedStore.open(root)
    assert len(store) == 90 and sorted(store.ids) == sorted(f"doc-{i}" for i in range(90))
    after = {p.name: p.stat().st_mtime_ns for p in (root / SHARDS_DIR).iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    hits = store.search(normalize(vectors[85:86]), k=1)
    assert hits.ids[0, 0] == "doc-85"
    # a reader opened before the publish still sees its own version, unchanged
    assert len(reader) == 50 and reader.search(normalize(vectors[:1]), k=1).ids[0, 0] == "doc-0"


def test_duplicate_ids_within_one_batch_are_stored_once(tmp_path, vectors):
    docs = docs_for(0, 4) + docs_for(0, 2)
    with StoreWriter(tmp_path, identity(), CFG) as writer:
        assert writer.add(vectors[:6], docs) == 4
        writer.publish()
    assert sorted(CompressedStore.open(tmp_path).ids) == ["doc-0", "doc-1", "doc-2", "doc-3"]


def test_unpublished_shards_of_a_crashed_run_are_resumed_not_redone(tmp_path, vectors):
    writer = StoreWriter(tmp_path, identity(), CFG)
    writer.add(vectors[:20], docs_for(0, 20))
    writer.close()  # "crash": nothing published
    (tmp_path / SHARDS_DIR / ".tmp-shard-half").mkdir()  # a shard that was mid-write
    assert not (tmp_path / CURRENT).exists()
    with StoreWriter(tmp_path, identity(), CFG) as writer:
        assert "doc-5" in writer.known_ids
        assert writer.add(vectors[:30], docs_for(0, 30)) == 10
        writer.publish()
    store = CompressedStore.open(tmp_path)
    assert sorted(store.ids) == sorted(f"doc-{i}" for i in range(30))
    assert not (tmp_path / SHARDS_DIR / ".tmp-shard-half").exists()


def test_unpublished_shard_of_another_checkpoint_is_discarded(tmp_path, vectors):
    with StoreWriter(tmp_path, identity("b" * 64), CFG) as writer:
        writer.add(vectors[:5], docs_for(0, 5))
    with StoreWriter(tmp_path, identity(), CFG) as writer:
        assert writer.known_ids == set()


def test_writer_refuses_a_store_of_another_checkpoint(build_store):
    root = build_store(count=10)
    with pytest.raises(StoreError, match="built with checkpoint"):
        StoreWriter(root, identity("b" * 64), CFG)


def test_second_concurrent_writer_is_refused(tmp_path):
    with StoreWriter(tmp_path, identity(), CFG):
        with pytest.raises(StoreError, match="another writer"):
            StoreWriter(tmp_path, identity(), CFG)


def test_current_is_swapped_last_when_the_new_version_is_complete(build_store, vectors, monkeypatch):
    root = build_store(count=20)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        if os.path.basename(dst) == CURRENT:  # what a reader could see at the moment of the swap
            seen.append(sorted(p.name for p in (root / VERSIONS / "v000002").iterdir()))
            assert CompressedStore.open(root).manifest.version == 1
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with StoreWriter(root, identity(), CFG) as writer:
        writer.add(vectors[20:30], docs_for(20, 10))
        writer.publish()
    assert seen == [[INDEX_FILE, "manifest.json"]]
    assert (root / CURRENT).read_text().strip() == "v000002"
    assert len(CompressedStore.open(root)) == 30


def test_growing_past_the_flat_limit_rebuilds_as_another_kind(tmp_path, vectors):
    cfg = IndexConfig(flat_max_docs=40, threads=1)
    with StoreWriter(tmp_path, identity(), cfg) as writer:
        writer.add(vectors[:30], docs_for(0, 30))
        writer.publish()
        assert writer.current.index.kind == "flat"
        writer.add(vectors[30:100], docs_for(30, 70))
        writer.publish()
        assert writer.current.index.kind == "hnsw"
    hits = CompressedStore.open(tmp_path).search(normalize(vectors[:100]), k=1)
    assert np.mean(hits.ids[:, 0] == np.array([f"doc-{i}" for i in range(100)])) >= 0.99


def test_removed_documents_leave_the_next_version_and_may_come_back(build_store, vectors):
    root = build_store(count=50, shard=25)
    before = CompressedStore.open(root)
    with StoreWriter(root, identity(), CFG) as writer:
        assert writer.remove({"doc-3", "doc-30", "doc-31", "never-stored"}) == 3
        assert writer.publish() == 2
    store = CompressedStore.open(root)
    assert sorted(store.ids) == sorted(f"doc-{i}" for i in range(50) if i not in (3, 30, 31))
    for row in range(50):  # the rebuilt index finds every kept doc, and a removed one nowhere
        top = store.search(normalize(vectors[row:row + 1]), k=1).ids[0, 0]
        assert (top != f"doc-{row}") if row in (3, 30, 31) else (top == f"doc-{row}")
    # the version a reader opened before keeps answering with every doc (its shards are untouched)
    assert before.search(normalize(vectors[30:31]), k=1).ids[0, 0] == "doc-30"
    with StoreWriter(root, identity(), CFG) as writer:
        assert writer.add(vectors[30:31], docs_for(30, 1)) == 1  # removed, so no longer a known id
        writer.publish()
    assert CompressedStore.open(root).search(normalize(vectors[30:31]), k=1).ids[0, 0] == "doc-30"


def test_a_removal_that_never_published_leaves_the_store_as_it_was(build_store):
    root = build_store(count=50, shard=25)
    writer = StoreWriter(root, identity(), CFG)
    writer.remove({"doc-7"})
    writer.close()  # "crash": the copy of doc-7's shard is on disk, unpublished
    with StoreWriter(root, identity(), CFG) as writer:
        assert writer.staged == [] and "doc-7" in writer.known_ids
        assert writer.publish() == 1  # nothing to do
    assert len(CompressedStore.open(root)) == 50
