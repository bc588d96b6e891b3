import json

from clara_ray.data.records import read_records
from clara_ray.ingest.outputs import END_TO_END, INSTRUCT, PRETRAIN, build_records, write_records

CHUNKS = [{"key": f"c{i}", "text": f"Passage {i} about topic {i}.", "source": "doc.md", "index": i} for i in range(6)]
QA = [{"question": "What is passage 0 about?", "answer": "topic 0", "type": "factual", "language": "en"},
      {"question": "Why does passage 0 exist?", "answer": "for tests", "type": "reasoning", "language": "en"}]


def _synthesis():
    ok = {"status": "ok", "summary": "Passage zero covers topic zero.", "qa": json.dumps(QA)}
    return {"c0": ok, "c1": {"status": "error", "summary": "", "qa": "[]"}}


def _records(seed=0):
    negatives = {c["key"]: [o["key"] for o in CHUNKS if o is not c] for c in CHUNKS}
    return build_records(CHUNKS, _synthesis(), negatives, instruct_docs=3, end_to_end_docs=5, seed=seed)


def test_records_have_the_stage_shapes_and_read_back(tmp_path):
    records = _records()
    counts = write_records(tmp_path, records)
    assert counts == {PRETRAIN: 2, INSTRUCT: 2, END_TO_END: 2}  # failed chunk c1 contributes nothing
    pretrain = read_records(tmp_path / PRETRAIN, "compress_pretrain")
    assert [r.data_type for r in pretrain] == ["paraphrase", "qa"]
    assert pretrain[0].answers == ["Passage zero covers topic zero."] and pretrain[1].question == [q["question"] for q in QA]
    instruct = read_records(tmp_path / INSTRUCT, "instruct")
    assert all(len(r.docs) == 3 and CHUNKS[0]["text"] in r.docs for r in instruct)
    e2e = read_records(tmp_path / END_TO_END, "end_to_end")
    for record in e2e:
        assert len(record.docs) == 5 and record.docs[record.pos_index[0]] == CHUNKS[0]["text"]


def test_shuffle_is_reproducible_and_varies(tmp_path):
    assert _records(0) == _records(0)
    positions = {r["pos_index"][0] for seed in range(8) for r in _records(seed)[END_TO_END]}
    assert len(positions) > 1  # the gold document is not always in the same slot
