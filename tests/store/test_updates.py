"""`clara add` / `clara remove` pieces that need no model or Ray (the whole flow runs against a live
server in tests/serve/test_live_store.py)."""
from __future__ import annotations

import pytest
from store_helpers import identity

from clara_ray.config import load_config
from clara_ray.store import CompressedStore, StoreError
from clara_ray.store.updates import AddConfig, ingest_config, published_checkpoint, run_remove


def test_added_documents_are_chunked_to_the_checkpoints_window_unless_configured(tmp_path, tiny_config):
    from clara_ray.model.modeling import CONFIG_FILE

    (tmp_path / CONFIG_FILE).write_text(tiny_config.model_dump_json())
    derived = ingest_config(AddConfig().ingest, tmp_path, tmp_path / "docs", tmp_path / "work")
    assert (derived.chunk.tokenizer, derived.chunk.max_tokens) == ("tiny-random", tiny_config.doc_max_length)
    assert (derived.input, derived.out, derived.until) == (str(tmp_path / "docs"), str(tmp_path / "work"), "caption")
    configured = load_config(AddConfig, None, ["ingest.chunk.max_tokens=16", "ingest.until=synthesize"]).ingest
    assert ingest_config(configured, tmp_path, tmp_path, tmp_path).chunk.max_tokens == 16
    assert ingest_config(configured, tmp_path, tmp_path, tmp_path).until == "caption"  # no synthesis, ever


def test_the_checkpoint_comes_from_the_store_or_must_be_given(build_store, tmp_path):
    with pytest.raises(StoreError, match="no published store version.*--checkpoint"):
        published_checkpoint(tmp_path / "empty")
    with pytest.raises(StoreError, match="/ckpt, which is not there.*--checkpoint"):
        published_checkpoint(build_store(count=10))  # store_helpers' identity names /ckpt


def test_remove_by_source_or_id_and_unknown_names_are_refused(build_store):
    root = build_store(count=30, shard=10)
    assert identity().path == "/ckpt"
    with pytest.raises(StoreError, match="'src-9'.*'doc-99'|'doc-99'.*'src-9'"):
        run_remove(root, ["doc-99"], ["src-9"])
    summary = run_remove(root, ["doc-0"], ["src-1"])  # docs_for: doc-i comes from src-(i % 3)
    kept = sorted(CompressedStore.open(root).ids)
    assert kept == sorted(f"doc-{i}" for i in range(1, 30) if i % 3 != 1)
    assert summary == {"version": 2, "removed": 11, "total_docs": len(kept)}
