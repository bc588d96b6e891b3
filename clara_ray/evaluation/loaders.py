"""Evaluation questions from the paper's JSONL files and from SQuAD v1.1 JSON.

Every loader yields `EvalQuestion`s: a question, its gold answers, its candidate documents and
the indices of the gold documents among them. Bad input raises `RecordError` naming the file
and the line (JSONL) or the JSON path (SQuAD) of the offending field.

`load_questions` also gives each question foreign documents (another SQuAD article's paragraphs,
or other JSONL questions' gold documents), which the `wrong_memory` setting puts in place of its
gold documents and the `foreign_memory` setting in place of its whole top-k.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from clara_ray.config import QUOTED_FIELD, validation_problems
from clara_ray.data.records import ANSWER_FIELDS, RecordError, check_positions, iter_jsonl
from clara_ray.parsing import ParseError, parse_json, read_text
from clara_ray.unicode import encoding_problem

# The paper's four benchmarks share one JSONL layout (FlashRAG-style); SQuAD has its own JSON.
PAPER_DATASETS = ("nq", "hotpotqa", "musique", "2wiki")


class EvalQuestion(BaseModel):
    id: str
    dataset: str
    question: str = Field(min_length=1)
    answers: list[str] = Field(min_length=1)
    docs: list[str] = Field(default_factory=list)
    pos_index: list[int] = Field(default_factory=list)
    # documents that cannot hold the answer (not among the candidates): one per gold document, or more
    foreign_docs: list[str] = Field(default_factory=list)

    _positions = model_validator(mode="after")(check_positions)

    @field_validator("id", "question", "answers", "docs")
    @classmethod
    def _encodable(cls, value: str | list[str]) -> str | list[str]:
        # Refused here, naming the record: the tokenizer would fail the whole batch it sits in.
        for i, text in enumerate([value] if isinstance(value, str) else value):
            if problem := encoding_problem(text):
                raise ValueError(f"text{'' if isinstance(value, str) else f' {i}'} {problem}")
        return value


def _doc_text(doc: Any) -> Any:
    """Candidate documents come as strings or as {title, text} / {contents} objects."""
    if isinstance(doc, dict):
        if "contents" in doc:
            return doc["contents"]
        if "text" in doc:
            return f"{doc['title']}\n{doc['text']}" if doc.get("title") else doc["text"]
    return doc


def _answers(obj: dict[str, Any]) -> Any:
    for field in ANSWER_FIELDS:
        value = obj.get(field)
        if value:
            return [value] if isinstance(value, str) else value
    return None


def parse_eval_record(obj: Any, dataset: str, source: str, line: int) -> EvalQuestion:
    if not isinstance(obj, dict):
        raise RecordError(source, line, f"expected a JSON object, got {type(obj).__name__}")
    answers = _answers(obj)
    if answers is None:
        raise RecordError(source, line, f"field 'answers': missing; expected one of {', '.join(ANSWER_FIELDS)}")
    fields = {
        "id": str(obj.get("id", f"{dataset}-{line}")),
        "dataset": dataset,
        "question": obj.get("question"),
        "answers": answers,
        "docs": [_doc_text(d) for d in obj.get("docs") or []],
        "pos_index": obj.get("pos_index") or [],
    }
    try:
        return EvalQuestion.model_validate(fields)
    except ValidationError as exc:
        raise RecordError(source, line, f"invalid evaluation record: {validation_problems(exc, QUOTED_FIELD)}") from None


def load_eval_jsonl(path: str | Path, dataset: str | None = None, limit: int | None = None) -> list[EvalQuestion]:
    """The paper's evaluation JSONL (NQ, HotpotQA, MuSiQue, 2Wiki); dataset defaults to the file stem."""
    path = Path(path)
    dataset = dataset or path.stem
    questions: list[EvalQuestion] = []
    for line, obj in iter_jsonl(path):
        if limit is not None and len(questions) >= limit:
            break
        questions.append(parse_eval_record(obj, dataset, str(path), line))
    if not questions:
        raise RecordError(str(path), None, "no evaluation records")
    return questions


def _squad_field(container: Any, key: str, kind: type, where: str, source: str) -> Any:
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, kind):
        raise RecordError(source, None, f"field '{where}.{key}': expected {kind.__name__}, got {type(value).__name__}")
    return value


def _read_squad(path: str | Path) -> list[Any]:
    try:
        data = parse_json(read_text(path))
    except ParseError as exc:
        raise RecordError(str(path), exc.line, exc.why) from None
    return _squad_field(data, "data", list, "<root>", str(path))


def _squad_contexts(article: Any, a: int, source: str) -> tuple[list[Any], list[str]]:
    where = f"data[{a}]"
    paragraphs = _squad_field(article, "paragraphs", list, where, source)
    return paragraphs, [_squad_field(p, "context", str, f"{where}.paragraphs[{i}]", source)
                        for i, p in enumerate(paragraphs)]


def squad_paragraphs(path: str | Path) -> list[str]:
    """Every paragraph of every article of the file (the pool foreign documents come from)."""
    return [c for a, article in enumerate(_read_squad(path)) for c in _squad_contexts(article, a, str(path))[1]]


def iter_squad(path: str | Path, articles: Sequence[int] | None = None) -> Iterator[EvalQuestion]:
    """SQuAD v1.1: one question per record, its article's paragraphs as candidates.

    `articles` selects article indices (train/eval splits are made by article, never by
    paragraph, so no evaluation paragraph is seen in training).
    """
    source = str(path)
    all_articles = _read_squad(path)
    chosen = range(len(all_articles)) if articles is None else articles
    for a in chosen:
        if not 0 <= a < len(all_articles):
            raise RecordError(source, None, f"article index {a} out of range ({len(all_articles)} articles)")
        where = f"data[{a}]"
        paragraphs, contexts = _squad_contexts(all_articles[a], a, source)
        for i, paragraph in enumerate(paragraphs):
            qas = _squad_field(paragraph, "qas", list, f"{where}.paragraphs[{i}]", source)
            for j, qa in enumerate(qas):
                qa_where = f"{where}.paragraphs[{i}].qas[{j}]"
                answers = _squad_field(qa, "answers", list, qa_where, source)
                texts = list(dict.fromkeys(_squad_field(x, "text", str, f"{qa_where}.answers[{n}]", source)
                                           for n, x in enumerate(answers)))
                try:
                    yield EvalQuestion(id=str(qa.get("id", qa_where)), dataset="squad",
                                       question=_squad_field(qa, "question", str, qa_where, source),
                                       answers=texts, docs=contexts, pos_index=[i])
                except ValidationError as exc:
                    raise RecordError(source, None, f"field '{qa_where}': {validation_problems(exc)}") from None


def load_squad(path: str | Path, articles: Sequence[int] | None = None, limit: int | None = None,
               per_article: int | None = None) -> list[EvalQuestion]:
    """`per_article` caps the questions taken from each article, spreading a small evaluation
    over many articles instead of exhausting the first one."""
    questions: list[EvalQuestion] = []
    taken: dict[tuple[str, ...], int] = {}
    for question in iter_squad(path, articles):
        if limit is not None and len(questions) >= limit:
            break
        article = tuple(question.docs)
        if per_article is not None and taken.get(article, 0) >= per_article:
            continue
        taken[article] = taken.get(article, 0) + 1
        questions.append(question)
    if not questions:
        raise RecordError(str(path), None, "no questions in the selected articles")
    return questions


def cap_candidates(question: EvalQuestion, max_candidates: int, seed: int = 0) -> EvalQuestion:
    """Keep every gold document plus a seeded random sample of the others, shuffled.

    SQuAD articles hold 10-100+ paragraphs; the paper's setting is about 20 candidates per
    question, and compressing fewer candidates keeps CPU runs affordable.
    """
    if len(question.docs) <= max_candidates:
        return question
    rng = random.Random(f"{seed}:{question.id}")
    gold = list(dict.fromkeys(question.pos_index))[:max_candidates]
    others = [i for i in range(len(question.docs)) if i not in set(gold)]
    keep = gold + rng.sample(others, max_candidates - len(gold))
    rng.shuffle(keep)
    return question.model_copy(update={
        "docs": [question.docs[i] for i in keep],
        "pos_index": [keep.index(i) for i in gold],
    })


def with_foreign_docs(question: EvalQuestion, pool: Sequence[str], seed: int = 0, at_least: int = 0) -> EvalQuestion:
    """Give the question one foreign document per gold document, and at least one and `at_least`: texts of
    `pool` that are not among its documents, picked by a generator seeded with `seed` and its id
    (from a mostly foreign pool a larger count keeps the first picks). Fewer (or none) when the pool has too few."""
    rng = random.Random(f"{seed}:foreign:{question.id}")
    own, count, picked = set(question.docs), max(1, at_least, len(set(question.pos_index))), []
    # rejection sampling: the pool is mostly foreign, and a full shuffle per question is quadratic
    for _ in range(50 * count):
        if len(picked) == count or not pool:
            break
        text = rng.choice(pool)
        if text not in own and text not in picked:
            picked.append(text)
    if len(picked) < count:
        eligible = [t for t in dict.fromkeys(pool) if t not in own and t not in picked]
        picked += rng.sample(eligible, min(count - len(picked), len(eligible)))
    return question.model_copy(update={"foreign_docs": picked})


def load_questions(fmt: str, path: str | Path, *, dataset: str | None = None, articles: Sequence[int] | None = None,
                   limit: int | None = None, per_article: int | None = None, max_candidates: int | None = None,
                   seed: int = 0, foreign: int = 0) -> list[EvalQuestion]:
    """One entry for the harness: `fmt` is "squad" or "jsonl" (the paper's layout).

    Foreign documents come from all articles of a SQuAD file (a held-out range still gets them;
    its own article's paragraphs never count), or from the other loaded JSONL questions' gold
    documents; `foreign` is the least number of them per question (else one per gold document)."""
    if fmt == "squad":
        questions = load_squad(path, articles, limit, per_article)
        pool = squad_paragraphs(path)
    elif fmt == "jsonl":
        questions = load_eval_jsonl(path, dataset, limit)
        pool = [q.docs[i] for q in questions for i in q.pos_index]
    else:
        raise ValueError(f"unknown evaluation data format {fmt!r}; expected 'squad' or 'jsonl'")
    # before capping: a SQuAD question's docs are then its whole article
    questions = [with_foreign_docs(q, pool, seed, foreign) for q in questions]
    if max_candidates:
        questions = [cap_candidates(q, max_candidates, seed) for q in questions]
    return questions
