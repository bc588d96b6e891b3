"""Loaders on small hand-written records and on a few real SQuAD articles (read in place)."""
import json
from pathlib import Path

import pytest

from clara_ray.data.records import RecordError
from clara_ray.evaluation.loaders import cap_candidates, load_eval_jsonl, load_questions, load_squad

SQUAD = Path("/work/shared/data/squad/squad-v1.1-dev-part-a.json")


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_paper_jsonl_accepts_every_answer_field_and_doc_shape(tmp_path):
    path = _write_jsonl(tmp_path / "hotpotqa.jsonl", [
        {"id": "h1", "question": "Who?", "golden_answers": ["Ann", "Anne"], "docs": ["a", "b"], "pos_index": [1]},
        {"question": "Where?", "answers": ["Paris"], "docs": [{"title": "T", "text": "x"}, {"contents": "y"}]},
        {"question": "When?", "answer": "1999", "docs": ["c"], "pos_index": [0]},
        {"question": "Which?", "gold_answer": "left", "docs": ["d", "e"]},
    ])
    questions = load_eval_jsonl(path)
    assert [q.answers for q in questions] == [["Ann", "Anne"], ["Paris"], ["1999"], ["left"]]
    assert questions[0].id == "h1" and questions[1].id == "hotpotqa-2"
    assert questions[1].docs == ["T\nx", "y"]
    assert [q.pos_index for q in questions] == [[1], [], [0], []]
    assert {q.dataset for q in questions} == {"hotpotqa"}
    assert len(load_eval_jsonl(path, dataset="2wiki", limit=2)) == 2


@pytest.mark.parametrize("bad, field", [
    ({"question": "Q", "docs": ["a"]}, "answers"),
    ({"question": "", "answers": ["x"], "docs": ["a"]}, "question"),
    ({"question": "Q", "answers": ["x"], "docs": ["a"], "pos_index": [3]}, "pos_index"),
    ({"question": "Q \ud800", "answers": ["x"], "docs": ["a"]}, "question': .*unicode string"),  # pydantic's words
    ({"question": "Q", "answers": ["x"], "docs": ["a", "b\udfff"]}, "docs': .*text 1 contains a lone surrogate"),
])
def test_paper_jsonl_errors_name_file_line_and_field(tmp_path, bad, field):
    path = _write_jsonl(tmp_path / "nq.jsonl", [{"question": "ok", "answers": ["y"], "docs": ["d"]}, bad])
    with pytest.raises(RecordError, match=rf"nq.jsonl:2: .*{field}"):
        load_eval_jsonl(path)


def test_paper_jsonl_bad_json_names_line(tmp_path):
    path = _write_jsonl(tmp_path / "musique.jsonl", [{"question": "ok", "answers": ["y"]}, "{not json"])
    with pytest.raises(RecordError, match="musique.jsonl:2: invalid JSON"):
        load_eval_jsonl(path)


def test_paper_jsonl_and_squad_files_that_are_not_utf8_name_file_and_line(tmp_path):
    (tmp_path / "nq.jsonl").write_bytes(b'{"question": "ok", "answers": ["y"], "docs": ["d"]}\n{"question": "\xe9"}\n')
    with pytest.raises(RecordError, match=r"nq.jsonl:2: not UTF-8 text"):
        load_eval_jsonl(tmp_path / "nq.jsonl")
    (tmp_path / "squad.json").write_bytes(b'{"data": [\n\n"\xff"]}')
    with pytest.raises(RecordError, match=r"squad.json:3: not UTF-8 text \(byte 0xff at column 2\)"):
        load_squad(tmp_path / "squad.json")


def test_squad_small_file_and_field_errors(tmp_path):
    article = {"title": "A", "paragraphs": [
        {"context": "Para zero.", "qas": [{"id": "q0", "question": "Zero?", "answers": [{"text": "zero"}, {"text": "zero"}]}]},
        {"context": "Para one.", "qas": [{"id": "q1", "question": "One?", "answers": [{"text": "one"}, {"text": "1"}]}]},
    ]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [article]}))
    q0, q1 = load_squad(path)
    assert (q0.docs, q0.pos_index, q0.answers) == (["Para zero.", "Para one."], [0], ["zero"])
    assert (q1.pos_index, q1.answers) == ([1], ["one", "1"])
    del article["paragraphs"][1]["qas"][0]["question"]
    path.write_text(json.dumps({"data": [article]}))
    with pytest.raises(RecordError, match=r"squad.json: field 'data\[0\].paragraphs\[1\].qas\[0\].question'"):
        load_squad(path)


def test_cap_candidates_keeps_gold_and_is_seeded(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [
        {"id": "q", "question": "Q", "answers": ["a"], "docs": [f"d{i}" for i in range(30)], "pos_index": [7, 20]}])
    (q,) = load_eval_jsonl(path)
    capped = cap_candidates(q, 5, seed=1)
    assert len(capped.docs) == 5
    assert sorted(capped.docs[i] for i in capped.pos_index) == ["d20", "d7"]
    assert cap_candidates(q, 5, seed=1) == capped
    assert cap_candidates(q, 5, seed=2).docs != capped.docs


@pytest.mark.skipif(not SQUAD.exists(), reason="shared SQuAD copy not on this machine")
def test_real_squad_articles_have_gold_paragraph_among_candidates():
    questions = load_questions("squad", SQUAD, articles=[0, 3], per_article=4, max_candidates=20)
    assert len(questions) == 8
    assert {q.dataset for q in questions} == {"squad"}
    for q in questions:
        assert len(q.docs) <= 20 and len(q.pos_index) == 1
        gold = q.docs[q.pos_index[0]]
        # SQuAD v1.1 answers are spans of their paragraph
        assert any(a in gold for a in q.answers), (q.id, q.answers)
    with pytest.raises(RecordError, match="article index 99 out of range"):
        load_squad(SQUAD, articles=[99])


def _squad_file(path: Path, num_articles: int) -> Path:
    articles = [{"title": f"A{a}", "paragraphs": [
        {"context": f"Article {a} paragraph {i}.",
         "qas": [{"id": f"q{a}-{i}", "question": f"Q {a} {i}?", "answers": [{"text": "x"}]}]} for i in range(4)]}
        for a in range(num_articles)]
    path.write_text(json.dumps({"data": articles}))
    return path


def test_squad_foreign_docs_come_from_other_articles_of_the_whole_file(tmp_path):
    path = _squad_file(tmp_path / "squad.json", 3)
    questions = load_questions("squad", path, articles=[1], seed=0)
    assert len(questions) == 4
    for q in questions:
        (foreign,) = q.foreign_docs
        assert foreign not in q.docs and foreign.split()[1] in {"0", "2"}  # articles outside the selection
    assert load_questions("squad", path, articles=[1], seed=0) == questions  # seeded
    other_seeds = [[q.foreign_docs for q in load_questions("squad", path, articles=[1], seed=s)] for s in (1, 2, 3)]
    assert any(f != [q.foreign_docs for q in questions] for f in other_seeds)
    capped = load_questions("squad", path, articles=[1], max_candidates=2)
    assert [q.foreign_docs for q in capped] == [q.foreign_docs for q in questions]
    five = load_questions("squad", path, articles=[1], seed=0, foreign=5)  # foreign_memory at k = 5
    for q, one in zip(five, questions):
        assert len(set(q.foreign_docs)) == 5 and q.foreign_docs[0] == one.foreign_docs[0]
        assert not set(q.foreign_docs) & set(q.docs)
    # one article: nothing is foreign (the harness refuses wrong_memory then)
    assert all(q.foreign_docs == [] for q in load_questions("squad", _squad_file(tmp_path / "one.json", 1)))


def test_jsonl_foreign_docs_are_other_questions_gold_docs(tmp_path):
    path = _write_jsonl(tmp_path / "hotpotqa.jsonl", [
        {"id": "a", "question": "A?", "answers": ["a"], "docs": ["ga", "shared"], "pos_index": [0]},
        {"id": "b", "question": "B?", "answers": ["b"], "docs": ["gb1", "gb2", "shared"], "pos_index": [0, 1]},
        {"id": "c", "question": "C?", "answers": ["c"], "docs": ["gc", "ga"], "pos_index": [0]},
    ])
    a, b, c = load_questions("jsonl", path)
    assert len(a.foreign_docs) == 1 and a.foreign_docs[0] in {"gb1", "gb2", "gc"}
    assert sorted(b.foreign_docs) == ["ga", "gc"]  # one per gold document
    assert c.foreign_docs[0] in {"gb1", "gb2"}  # "ga" is among c's own candidates
