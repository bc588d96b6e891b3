"""The precompress Ray job end to end with the tiny model (real Ray Data, real actor pool)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from store_helpers import write_corpus

from clara_ray.store import CompressedStore, StoreError
from clara_ray.store.job import PrecompressConfig, normalise_record, run_precompress
from clara_ray.store.shards import SHARDS_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config):
    """A tiny CLaRa whose query reasoner starts as the compressor (stage-3 initialisation)."""
    from clara_ray import CLaRa

    model = CLaRa.from_config(tiny_config, device="cpu")
    model.prepare_stage("end_to_end")
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path)
    return path, model


def small_cfg(**extra) -> PrecompressConfig:
    return PrecompressConfig(batch_size=4, shard_size=8, index={"threads": 1}, **extra)


def test_normalise_record_fills_ids_and_names_bad_input():
    row = normalise_record({"text": "hello"}, "corpus.jsonl")
    assert row["id"].startswith("sha1-") and row["source"] == "corpus.jsonl" and row["chunk"] == -1
    assert normalise_record({"text": "hello"}, "corpus.jsonl")["id"] == row["id"]  # stable for reruns
    with pytest.raises(StoreError, match=r"corpus.jsonl: record .*'text' missing"):
        normalise_record({"id": "x", "body": "no text"}, "corpus.jsonl")
    with pytest.raises(StoreError, match="'chunk' must be an integer"):
        normalise_record({"id": "x", "text": "t", "chunk": "two"}, "corpus.jsonl")


def test_corpus_lines_that_are_not_json_objects_name_file_and_line():
    from clara_ray.store.job import _parse_jsonl_lines

    rows = _parse_jsonl_lines({"text": ['{"text": "ok"}'], "path": ["c.jsonl"], "line": [1]})
    assert list(rows["text"]) == ["ok"]
    for line, why in (('{"text": ', "invalid JSON: Expecting value"), ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                      ('{"chunk": ' + "9" * 5000 + "}", "Exceeds the limit"), ("[1]", "is a JSON object, got list")):
        with pytest.raises(StoreError, match=rf"^c.jsonl:7: .*{why}"):
            _parse_jsonl_lines({"text": [line], "path": ["c.jsonl"], "line": [7]})


@pytest.mark.slow
def test_corpus_jsonl_lines_end_at_newlines_only_and_bad_bytes_name_their_line(ray_cluster, tmp_path):
    from clara_ray.store.job import read_corpus

    texts = ["one\u2028two", "three\x85four", "five"]  # valid JSON strings; str.splitlines breaks them
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n\n"
                              for i, t in enumerate(texts)), encoding="utf-8")
    assert sorted(r["text"] for r in read_corpus(corpus).take_all()) == sorted(texts)
    with corpus.open("ab") as fh:
        fh.write(b'{"id": "d3", "text": "caf\xe9"}\n')  # a Latin-1 line
    with pytest.raises(StoreError, match=r"corpus.jsonl:7: not UTF-8 text \(byte 0xe9 at column 26\)"):
        read_corpus(corpus).take_all()


def test_text_that_is_not_unicode_makes_a_failed_document_not_a_failed_job():
    row = normalise_record({"id": "d7", "text": json.loads('"bad \\ud800 text"')}, "corpus.jsonl")
    assert row["text"] == "" and row["error"].startswith("corpus.jsonl: record id='d7': field 'text' contains a lone")
    escaped = normalise_record({"id": json.loads('"d\\udfff"'), "text": "fine"}, "corpus.jsonl")
    assert escaped["id"] == "d\\udfff" and "field 'id' contains a lone surrogate U+DFFF" in escaped["error"]
    assert normalise_record({"id": "ok", "text": "fine \x00 🙂"}, "corpus.jsonl")["error"] == ""


def test_compressor_retries_a_failed_batch_per_document_and_names_the_culprit(checkpoint):
    from clara_ray.store.job import Compressor

    path, model = checkpoint
    texts = ["The Nile flows north.", "\ud800", "Copper conducts.", "already refused upstream"]
    batch = {"id": np.array(["a", "b", "c", "d"], dtype=object), "text": np.array(texts, dtype=object),
             "source": np.array(["s.jsonl"] * 4, dtype=object), "chunk": np.array([-1] * 4),
             "error": np.array(["", "", "", "s.jsonl: record id='d': earlier"], dtype=object)}
    out = Compressor(str(path), "cpu", 1)(batch)
    assert out["error"][0] == out["error"][2] == "" and out["error"][3] == "s.jsonl: record id='d': earlier"
    assert out["error"][1].startswith("s.jsonl: record id='b': could not be compressed: TypeError")
    expected = model.compress_documents([texts[0], texts[2]]).numpy().astype(np.float16)
    np.testing.assert_allclose(out["vectors"][[0, 2]].astype(np.float32), expected.astype(np.float32), atol=2e-3)


def test_parquet_rows_are_normalised_and_corpus_files_found(tmp_path):
    from clara_ray.store.job import _normalise_parquet_rows, corpus_files

    batch = {"text": np.array(["a", "b"], dtype=object), "id": np.array([None, "x"], dtype=object),
             "chunk": np.array([np.nan, 3.0]), "path": np.array(["c.parquet", "c.parquet"], dtype=object)}
    rows = _normalise_parquet_rows(batch)
    assert rows["id"][1] == "x" and rows["id"][0].startswith("sha1-") and list(rows["chunk"]) == [-1, 3]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text("")
    (tmp_path / "b.parquet").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert corpus_files(tmp_path) == ([str(tmp_path / "sub" / "a.jsonl")], [str(tmp_path / "b.parquet")])
    with pytest.raises(StoreError, match="no .jsonl or .parquet"):
        corpus_files(tmp_path / "notes.txt")


def test_index_task_on_gpus_must_be_a_task():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="index_task.num_gpus > 0 needs index_task.run_in=task"):
        PrecompressConfig(index_task={"num_gpus": 1})
    task = PrecompressConfig(index_task={"run_in": "task", "num_gpus": 1, "memory": 1 << 30}).index_task
    assert task.remote_options() == {"num_gpus": 1, "num_cpus": 1, "max_retries": 0, "memory": 1 << 30}


@pytest.mark.slow
def test_store_finds_each_doc_by_its_query_reasoner_encoding_then_adds_incrementally(ray_cluster, checkpoint, tmp_path):
    path, model = checkpoint
    corpus = tmp_path / "corpus.jsonl"
    texts = write_corpus(corpus, 0, 24)
    out = tmp_path / "store"
    summary = run_precompress(path, corpus, out, small_cfg())
    assert summary["new_docs"] == 24 and summary["version"] == 1

    store = CompressedStore.open(out, expect_checkpoint=path)
    queries = model.retrieval_vectors(model.encode_queries(texts)).numpy()
    hits = store.search(queries, k=3)
    assert list(hits.ids[:, 0]) == [f"d{i}" for i in range(24)]
    assert hits.texts[5][0] == texts[5] and hits.chunks[5][0] == 5
    exact = model.compress_documents(texts[:4]).numpy().astype(np.float16)
    np.testing.assert_allclose(hits.vectors[:4, 0].astype(np.float32), exact.astype(np.float32), atol=2e-3)

    # incremental: 8 old + 8 new docs -> only the new ones are compressed, the old shards stay; the index
    # is extended in a Ray task this time (on a cluster: a GPU node, see cluster/jobs/precompress.yaml);
    # two documents that cannot be stored (JSON escapes of lone surrogates) are named, not fatal
    old_shards = set(os.listdir(out / SHARDS_DIR))
    write_corpus(corpus, 16, 16)
    with corpus.open("a") as fh:
        fh.write(json.dumps({"id": "bad-text", "text": "broken \ud800 text", "source": "rivers.txt"}) + "\n")
        fh.write(json.dumps({"id": "bad-\udfff", "text": "fine text"}) + "\n")
    summary = run_precompress(path, corpus, out, small_cfg(index_task={"run_in": "task", "num_cpus": 0.5}))
    assert (summary["new_docs"], summary["already_stored"], summary["total_docs"]) == (8, 24, 32)
    assert old_shards < set(os.listdir(out / SHARDS_DIR))
    assert sorted(CompressedStore.open(out).ids) == sorted(f"d{i}" for i in range(32))
    bad_id, bad_text = sorted(summary["failed"])
    assert bad_id.startswith(f"{corpus}: record id='bad-\\\\udfff': field 'id' contains a lone surrogate U+DFFF")
    assert bad_text.startswith("rivers.txt: record id='bad-text': field 'text' contains a lone surrogate U+D800")


@pytest.mark.slow
def test_killed_job_resumes_and_stores_every_doc_exactly_once(ray_cluster, checkpoint, tmp_path):
    path, _ = checkpoint
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 0, 1200)
    out = tmp_path / "store"
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "pipelines.precompress", "--checkpoint", str(path), "--corpus", str(corpus),
           "--out", str(out), "batch_size=4", "shard_size=8", f"ray_address={address}", "index.threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            shards = [p for p in (out / SHARDS_DIR).glob("shard-*")] if (out / SHARDS_DIR).exists() else []
            if len(shards) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "CURRENT").exists()  # killed before publishing anything

    summary = run_precompress(path, corpus, out, small_cfg())
    assert summary["already_stored"] >= 16 and summary["already_stored"] + summary["new_docs"] == 1200
    ids = CompressedStore.open(out).ids
    assert len(ids) == 1200 and sorted(ids) == sorted(f"d{i}" for i in range(1200))


@pytest.mark.slow
def test_other_checkpoint_and_bad_records_are_refused(ray_cluster, checkpoint, tmp_path, tiny_config):
    from clara_ray import CLaRa

    path, _ = checkpoint
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 0, 8)
    out = tmp_path / "store"
    run_precompress(path, corpus, out, small_cfg())
    other = tmp_path / "other_ckpt"
    CLaRa.from_config(tiny_config, device="cpu").save_pretrained(other)
    with pytest.raises(StoreError, match="built with checkpoint"):
        run_precompress(other, corpus, out, small_cfg())
    with pytest.raises(StoreError, match="built with checkpoint"):
        CompressedStore.open(out, expect_checkpoint=other)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "txt": "typo"}\n')
    with pytest.raises(Exception, match=r"bad.jsonl: record .*'text' missing"):
        run_precompress(path, bad, tmp_path / "store2", small_cfg())

