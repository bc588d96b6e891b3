"""Stage JSONL through Ray Data: validation at read time with file:line, micro-batch stream."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from clara_ray.data.records import CompressPretrainRecord, EndToEndRecord, RecordError
from clara_ray.train.data import count_windows, document_grouped, micro_batches, read_stage_dataset

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
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\n" + b'{"question": "\xe9t\xe9"}\n')  # Latin-1
    with pytest.raises(Exception, match=r"broken\.jsonl:3: not UTF-8 text \(byte 0xe9 at column 15\)"):
        read_stage_dataset([str(path)], "instruct")


def test_line_separators_inside_json_strings_split_no_record(ray_cluster, tmp_path):
    """Stage files keep U+2028 as it is (write_jsonl, ensure_ascii=False): one record, one line."""
    question = "Where\u2028does the Danube\x85rise?"
    path = _write(tmp_path / "sep.jsonl", [json.dumps({**GOOD, "question": question}, ensure_ascii=False)] * 3)
    rows = read_stage_dataset([str(path)], "end_to_end").take_all()
    assert sorted(r["line"] for r in rows) == [1, 2, 3]
    assert {EndToEndRecord.model_validate_json(r["record"]).question for r in rows} == {question}


def _window(offset: int, length: int) -> str:
    return json.dumps({"data_type": "paraphrase", "answers": ["w"], "docs": ["w"], "doc_span": [offset, length]})


def test_a_window_longer_than_the_models_documents_fails_the_read_with_file_and_line(ray_cluster, tmp_path):
    paragraph = json.dumps({"data_type": "paraphrase", "answers": ["p"], "docs": ["p"]})
    path = _write(tmp_path / "windows.jsonl", [paragraph, _window(0, 192), _window(48, 10**12)])
    assert count_windows(read_stage_dataset([str(path)], "compress_pretrain")) == 2  # not checked without a model
    with pytest.raises(Exception, match=r"windows\.jsonl:3: doc_span \[48, 1000000000000\]: "
                                          r"a paragraph of 1000000000000 tokens .*model\.doc_max_length=192"):
        read_stage_dataset([str(path)], "compress_pretrain", doc_max_length=192)
    path = _write(path, [paragraph, _window(0, 192)])
    assert count_windows(read_stage_dataset([str(path)], "compress_pretrain", doc_max_length=192)) == 1


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


def _paragraph_lines(paragraphs: int) -> list[str]:
    """Stage-1 JSONL as build_squad_data writes it: each paragraph's reconstruction, then its QA."""
    lines = []
    for i in range(paragraphs):
        doc = f"Paragraph {i} " + "word " * (i * 7 % 40)
        lines += [json.dumps({"data_type": "paraphrase", "answers": [doc], "docs": [doc]}),
                  json.dumps({"data_type": "qa", "question": [f"q{i}?"], "answers": [f"a{i}"], "docs": [doc]})]
    return lines


def test_document_groups_put_a_paragraphs_records_in_one_micro_batch(ray_cluster, tmp_path):
    path = _write(tmp_path / "pretrain.jsonl", _paragraph_lines(32))
    ds = read_stage_dataset([str(path)], "compress_pretrain")
    epoch = list(itertools.islice(micro_batches(ds.iterator(), "compress_pretrain", 4, 16, 0, length_buckets=4,
                                                group_documents=True), 16))
    records = [r for b in epoch for r in b]
    assert sorted(r.model_dump_json() for r in records) == sorted(
        CompressPretrainRecord.model_validate_json(line).model_dump_json() for line in _paragraph_lines(32))
    for batch in epoch:  # two whole paragraphs per micro-batch: their documents compressed once
        assert sorted(r.data_type for r in batch) == ["paraphrase", "paraphrase", "qa", "qa"]
        assert len({r.docs[0] for r in batch}) == 2


def test_without_document_groups_the_shuffle_splits_paragraphs(ray_cluster, tmp_path):
    """What group_documents changes: Ray Data's record-level shuffle scatters a paragraph's records."""
    path = _write(tmp_path / "pretrain.jsonl", _paragraph_lines(32))
    ds = read_stage_dataset([str(path)], "compress_pretrain")
    epoch = list(itertools.islice(micro_batches(ds.iterator(), "compress_pretrain", 4, 16, 0, length_buckets=4), 16))
    assert sum(len({r.docs[0] for r in b}) for b in epoch) > 2 * len(epoch)


def test_document_grouped_keeps_every_record_once_and_each_group_adjacent():
    rng = random.Random(0)
    docs = [f"doc {i}" for i in range(10)]
    records = [CompressPretrainRecord(data_type="paraphrase", answers=[str(n)], docs=[rng.choice(docs)])
               for n in range(40)]
    out = list(document_grouped(iter(records), 40, random.Random(1)))
    assert sorted(map(id, out)) == sorted(map(id, records))
    runs = [d for d, _ in itertools.groupby(r.docs[0] for r in out)]
    assert len(runs) == len(set(runs))  # each document's records form one run
    unshuffled = list(document_grouped(iter(records), 40, None))
    assert [r.docs[0] for r in unshuffled][0] == records[0].docs[0]  # first appearance order
    assert [r.answers for r in out] != [r.answers for r in unshuffled]
