import json

import pytest

from clara_ray.data.records import RecordError, iter_jsonl, parse_record, read_records, write_jsonl


@pytest.mark.parametrize("field", ["answer", "answers", "golden_answers", "gold_answer"])
def test_every_answer_field_variant_is_accepted(field):
    value = "Paris" if field in ("answer", "gold_answer") else ["Paris", "paris"]
    record = parse_record({"question": "q", "docs": ["d"], field: value, "pos_index": [0]}, "end_to_end")
    assert record.answers[0] == "Paris" and record.answer == "Paris"


BAD = [
    ("compress_pretrain", {"data_type": "summary", "answers": ["a"], "docs": ["d"]}, "data_type"),
    ("compress_pretrain", {"data_type": "qa", "question": ["q"], "answers": ["a", "b"], "docs": ["d"]},
     "1 questions but 2 answers"),
    ("compress_pretrain", {"data_type": "paraphrase", "answers": ["a"], "docs": ["d", "e"]}, "exactly one"),
    ("compress_pretrain", {"data_type": "paraphrase", "answers": ["a"], "docs": ["d"], "doc_span": [5, 5]},
     r"doc_span \[5, 5\] must be \[offset, length\]"),
    ("compress_pretrain", {"data_type": "paraphrase", "answers": ["a"], "docs": ["d"], "doc_span": [1]}, "doc_span"),
    ("instruct", {"question": "q", "docs": ["d"]}, "missing answer"),
    ("instruct", {"question": "q", "docs": [], "answer": "a"}, "at least one document"),
    ("instruct", {"question": "", "docs": ["d"], "answer": "a"}, "question"),
    ("instruct", {"question": "q", "docs": ["d"], "answer": ""}, "missing answer"),
    ("end_to_end", {"question": "q", "docs": ["d"], "answer": "a", "pos_index": [3]}, "out of range"),
    ("end_to_end", ["not", "an", "object"], "expected a JSON object"),
]


@pytest.mark.parametrize("stage,obj,message", BAD)
def test_bad_records_name_file_line_and_reason(tmp_path, stage, obj, message):
    path = tmp_path / "data.jsonl"
    good = {"compress_pretrain": {"data_type": "paraphrase", "answers": ["a"], "docs": ["d"]},
            "instruct": {"question": "q", "docs": ["d"], "answer": "a"},
            "end_to_end": {"question": "q", "docs": ["d"], "answer": "a"}}[stage]
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(obj) + "\n")
    with pytest.raises(RecordError, match=message) as info:
        read_records(path, stage)
    assert str(info.value).startswith(f"{path}:3:")
    assert info.value.line == 3


@pytest.mark.parametrize("line, why", [
    (b'{"question": ', "invalid JSON: Expecting value"),
    (b'{"question": "q\xff"}', r"not UTF-8 text \(byte 0xff at column 16\)"),  # e.g. a Latin-1 file
    (b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid JSON: nested too deeply"),
    (b'{"question": ' + b"9" * 5000 + b"}", "invalid JSON: Exceeds the limit"),
])
def test_a_line_that_is_not_utf8_json_names_its_line(tmp_path, line, why):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b'{"question": "q", "docs": ["d"], "answer": "a"}\n' + line + b"\n")
    with pytest.raises(RecordError, match=rf"broken.jsonl:2: {why}"):
        read_records(path, "instruct")


def test_line_separators_inside_json_strings_stay_in_their_record(tmp_path):
    """write_jsonl escapes what str.splitlines would break at; raw ones, as other tools write them, split no line."""
    rows = [{"question": "a\u2028b\x85c\x0cd", "docs": ["d\u2029e"], "answer": "a"}] * 2
    path = tmp_path / "sep.jsonl"
    write_jsonl(path, rows)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")  # raw
    for _ in range(2):
        records = read_records(path, "instruct")
        assert [r.question for r in records] == ["a\u2028b\x85c\x0cd"] * 2 and records[0].docs == ["d\u2029e"]
        write_jsonl(path, rows)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(RecordError, match="no records"):
        read_records(path, "instruct")


def test_written_jsonl_reads_back_and_is_the_same_bytes_for_the_same_rows(tmp_path):
    rows = [{"question": "où?", "answers": ["Zürich"], "docs": ["d"]}, {"b": 1, "a": 2}]
    path = tmp_path / "out.jsonl"
    assert write_jsonl(path, rows) == 2
    assert [obj for _, obj in iter_jsonl(path)] == rows
    first = path.read_bytes()
    assert "Zürich" in first.decode("utf-8")  # not \u-escaped: the files stay readable
    write_jsonl(path, [{"docs": ["d"], "answers": ["Zürich"], "question": "où?"}, {"a": 2, "b": 1}])
    assert path.read_bytes() == first  # key order does not leak into the file
    assert write_jsonl(path, []) == 0 and path.read_bytes() == b""


def test_a_record_error_survives_pickling_whole():
    """Ray sends a read task's error to the driver pickled; rebuilt from its message alone it failed."""
    import pickle

    error = pickle.loads(pickle.dumps(RecordError("train.jsonl", 7, "field 'answers': Field required")))
    assert (str(error), error.source, error.line, error.reason) == (
        "train.jsonl:7: field 'answers': Field required", "train.jsonl", 7, "field 'answers': Field required")
