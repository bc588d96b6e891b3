"""Stage JSONL through Ray Data: validation at read time with file:line, micro-batch stream."""
from __future__ import annotations

import itertools
import json

import pytest

from clara_ray.data.records import EndToEndRecord, RecordError
from clara_ray.train.data import micro_batches, read_stage_dataset

GOOD = {"question": "Where does the Danube rise?", "docs": ["The Danube rises in the Black Forest.", "Other."],
        "golden_answers": ["the Black Forest"], "pos_index": [0]}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_and_rebuilds_typed_records(ray_cluster, tmp_path):
    path = _write(tmp_path / "e2e.jsonl", [json.dumps({**GOOD, "question": f"q{i}"}) for i in range(5)] + [""])
    ds = read_stage_dataset([str(path)], "end_to_end")
    assert ds.count() == 5
    rows = ds.take_all()
    assert sorted(r["line"] for r in rows) == [1, 2, 3, 4, 5]
    batch = next(iter(micro_batches(ds.iterator(), "end_to_end", 2, 0, 0)))
    assert all(isinstance(r, EndToEndRecord) for r in batch)
    assert batch[0].answers == ["the Black Forest"] and batch[0].pos_index == [0]


def test_bad_record_fails_the_read_with_file_and_line(ray_cluster, tmp_path):
    bad = {k: v for k, v in GOOD.items() if k != "golden_answers"}
    path = _write(tmp_path / "bad.jsonl", [json.dumps(GOOD), json.dumps(GOOD), json.dumps(bad)])
    with pytest.raises(Exception, match=r"bad\.jsonl:3: .*missing answer"):
        read_stage_dataset([str(path)], "end_to_end")


def test_invalid_json_names_its_line(ray_cluster, tmp_path):
    path = _write(tmp_path / "broken.jsonl", [json.dumps(GOOD), '{"question": '])
    with pytest.raises(Exception, match=r"broken\.jsonl:2: invalid JSON"):
        read_stage_dataset([str(path)], "instruct")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RecordError, match="nowhere.jsonl: data file not found"):
        read_stage_dataset([str(tmp_path / "nowhere.jsonl")], "instruct")


def test_micro_batch_stream_cycles_epochs_with_full_batches(ray_cluster, tmp_path):
    path = _write(tmp_path / "e2e.jsonl", [json.dumps({**GOOD, "question": f"q{i}"}) for i in range(5)])
    ds = read_stage_dataset([str(path)], "end_to_end")
    batches = list(itertools.islice(micro_batches(ds.iterator(), "end_to_end", 2, 0, 0), 5))
    assert [len(b) for b in batches] == [2] * 5  # the odd record is dropped, never a short batch
    questions = [r.question for b in batches for r in b]
    assert questions[:4] == questions[4:8]  # the second epoch replays the data
    assert set(questions) <= {f"q{i}" for i in range(5)}
