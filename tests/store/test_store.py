import numpy as np
import pytest
from store_helpers import identity

from clara_ray.store import CompressedStore, StoreError, normalize
from clara_ray.store.shards import SHARD_INFO, SHARDS_DIR, VECTORS


def test_search_finds_each_doc_with_its_own_vector_and_returns_exact_fp16(build_store, vectors):
    store = CompressedStore.open(build_store(count=60), expect_checkpoint=identity())
    hits = store.search(normalize(vectors[:60]), k=3)
    assert list(hits.ids[:, 0]) == [f"doc-{i}" for i in range(60)]
    np.testing.assert_allclose(hits.scores[:, 0], 1.0, atol=1e-3)
    assert hits.texts[7][0] == "text 7" and hits.sources[7][0] == "src-1" and hits.chunks[7][0] == 2
    assert hits.vectors.shape == (60, 3, 4, 32) and hits.vectors.dtype == np.float16
    np.testing.assert_array_equal(hits.vectors[:, 0], vectors[:60].astype(np.float16))


def test_every_hit_carries_its_own_text_and_vector_across_shards(build_store, vectors):
    store = CompressedStore.open(build_store(count=60, shard=7))  # 9 shards: hits span several
    hits = store.search(normalize(vectors[:20]), k=12)
    for q in range(20):
        rows = [int(doc_id.removeprefix("doc-")) for doc_id in hits.ids[q]]
        assert len({row // 7 for row in rows}) > 1
        assert hits.texts[q] == [f"text {row}" for row in rows]
        np.testing.assert_array_equal(hits.vectors[q], vectors[rows].astype(np.float16))


def test_k_larger_than_the_store_is_capped(build_store, vectors):
    store = CompressedStore.open(build_store(count=10, shard=4))
    hits = store.search(normalize(vectors[:2]), k=50)
    assert hits.ids.shape == (2, 10) and set(hits.ids[0]) == {f"doc-{i}" for i in range(10)}


def test_query_of_the_wrong_width_is_rejected(build_store):
    store = CompressedStore.open(build_store(count=10))
    with pytest.raises(StoreError, match=r"\(Q, 128\)"):
        store.search(np.zeros((1, 64), dtype=np.float32), k=1)


def test_mismatched_checkpoint_is_refused(build_store):
    root = build_store(count=10)
    with pytest.raises(StoreError, match="built with checkpoint"):
        CompressedStore.open(root, expect_checkpoint=identity("b" * 64))
    with pytest.raises(StoreError, match="fingerprint aaaaaaaaaaaa"):
        CompressedStore.open(root, expect_checkpoint="c" * 64)


def test_corrupted_shard_is_named_in_the_error(build_store):
    root = build_store(count=30, shard=10)
    victim = sorted((root / SHARDS_DIR).iterdir())[1] / VECTORS
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte inside the vectors
    victim.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{victim}: corrupted shard"):
        CompressedStore.open(root)


def test_truncated_shard_fails_even_without_checksums(build_store):
    root = build_store(count=30, shard=10)
    victim = sorted((root / SHARDS_DIR).iterdir())[0] / VECTORS
    victim.write_bytes(victim.read_bytes()[:-200])
    with pytest.raises(StoreError, match="corrupted shard"):
        CompressedStore.open(root, verify=False)


def test_store_without_published_version_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="no published store"):
        CompressedStore.open(tmp_path)


def test_a_missing_store_directory_is_named(tmp_path):
    with pytest.raises(StoreError, match=f"store {tmp_path / 'none'} does not exist"):
        CompressedStore.open(tmp_path / "none")


def _read_shard_infos(root):  # what a writer does with the shards it builds on
    from clara_ray.store.shards import list_shard_dirs, read_shard_info

    return [read_shard_info(d) for d in list_shard_dirs(root / SHARDS_DIR)]


MANIFEST, INFO = "versions/*/manifest.json", f"{SHARDS_DIR}/*/{SHARD_INFO}"
DAMAGED_BOOKKEEPING = {  # file (a glob under the store), its new content, who reads it, what the error says
    "manifest not UTF-8": (MANIFEST, b'{"version": "caf\xe9"}', CompressedStore.open, "invalid manifest: Invalid JSON"),
    "manifest nested too deeply": (MANIFEST, b"[" * 100_000, CompressedStore.open, "invalid manifest: Invalid JSON"),
    "manifest without fields": (MANIFEST, b'{"version": 1}', CompressedStore.open, "invalid manifest: created: Field"),
    "CURRENT not UTF-8": ("CURRENT", b"v\xe9", CompressedStore.open, "not UTF-8 text"),
    "shard info not UTF-8": (INFO, b'{"fingerprint": "caf\xe9"}', _read_shard_infos, "Invalid JSON"),
    "shard info nested too deeply": (INFO, b"[" * 100_000, _read_shard_infos, "Invalid JSON"),
    "shard info a list": (INFO, b"[1]", _read_shard_infos, "Input should be an object"),
    "shard info without fields": (INFO, b'{"fingerprint": "a"}', _read_shard_infos, "unreadable shard info: "),
}


@pytest.mark.parametrize("case", DAMAGED_BOOKKEEPING)
def test_damaged_store_bookkeeping_is_a_store_error_naming_the_file(case, build_store):
    """The store's own JSON read back (a disk error, a copy cut short): one StoreError naming the
    file, which the serving replicas' store watcher refuses, keeping the version in service."""
    pattern, content, read, why = DAMAGED_BOOKKEEPING[case]
    root = build_store(count=10)
    victim = sorted(root.glob(pattern))[0]
    victim.write_bytes(content)
    with pytest.raises(StoreError) as raised:
        read(root)
    message = str(raised.value)
    assert str(victim) in message and why in message and "\n" not in message, message
