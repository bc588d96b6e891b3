"""The three training stages' JSONL records (docs/design.md section 6) as validated types.

A record that lacks what its stage needs raises `RecordError` naming file, line and field, at
read time, instead of failing deep inside a training step.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clara_ray.atomic import write_atomic
from clara_ray.config import QUOTED_FIELD, InputError, validation_problems
from clara_ray.parsing import ParseError, decode_text, parse_json

Stage = Literal["compress_pretrain", "instruct", "retrieval_warmup", "end_to_end"]
# retrieval_warmup: the optional query-reasoner warm-up before stage 3 (docs/design.md section 4).
STAGES: tuple[str, ...] = ("compress_pretrain", "instruct", "retrieval_warmup", "end_to_end")
# The adapters each stage trains (docs/design.md section 5); stage 2 can keep its compressor frozen.
_TRAINED_ADAPTERS: dict[str, tuple[str, ...]] = {
    "compress_pretrain": ("compressor", "generator"), "instruct": ("compressor", "generator"),
    "retrieval_warmup": ("query_reasoner",), "end_to_end": ("query_reasoner", "generator"),
}
ANSWER_FIELDS = ("answer", "answers", "golden_answers", "gold_answer")


def trained_adapters(stage: str, train_compressor: bool = True) -> tuple[str, ...]:
    """The adapters `stage` trains; without the compressor when it stays frozen (stage 2's option)."""
    return tuple(a for a in _TRAINED_ADAPTERS[stage] if train_compressor or a != "compressor")


class RecordError(InputError):
    def __init__(self, source: str, line: int | None, message: str):
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source, self.line, self.reason = source, line, message

    def __reduce__(self):
        # Raised in Ray Data read tasks: pickling must rebuild it from its fields, not its message,
        # or the driver gets UnserializableException instead of the error naming file and line.
        return type(self), (self.source, self.line, self.reason)


def _nonempty(docs: list[str]) -> list[str]:
    if not docs:
        raise ValueError("needs at least one document")
    if any(not isinstance(d, str) or not d.strip() for d in docs):
        raise ValueError("documents must be non-empty strings")
    return docs


def _as_answer_list(value: Any) -> list[str]:
    answers = [value] if isinstance(value, str) else list(value or [])
    answers = [a for a in answers if isinstance(a, str) and a.strip()]
    if not answers:
        raise ValueError("needs a non-empty answer")
    return answers


def _pick_answers(data: Any) -> Any:
    """Fold every answer-field variant into `answers` (first non-empty variant wins)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if "answers" not in data or not data["answers"]:
        for field in ANSWER_FIELDS:
            if data.get(field):
                data["answers"] = data[field]
                break
    for field in ("answer", "golden_answers", "gold_answer"):
        data.pop(field, None)
    if "answers" not in data:
        raise ValueError(f"missing answer: expected one of {', '.join(ANSWER_FIELDS)}")
    return data


class CompressPretrainRecord(BaseModel):
    """Stage 1: one document with its QA pairs, or with a paraphrase (answers[0])."""
    model_config = ConfigDict(extra="ignore")
    data_type: Literal["qa", "paraphrase"]
    question: list[str] = Field(default_factory=list)
    answers: list[str]
    docs: list[str]
    # A window of a longer document: (offset of its first token, tokens the compressor reads of that document).
    # With model.window_positions: document, the window is compressed at the positions it has there.
    doc_span: tuple[int, int] | None = None

    _docs = field_validator("docs")(classmethod(lambda cls, v: _nonempty(v)))

    @model_validator(mode="after")
    def _check_shape(self):
        if len(self.docs) != 1:
            raise ValueError(f"stage-1 records hold exactly one document, got {len(self.docs)}")
        if self.doc_span is not None and not 0 <= self.doc_span[0] < self.doc_span[1]:
            raise ValueError(f"doc_span {list(self.doc_span)} must be [offset, length] with 0 <= offset < length")
        if not self.answers or not all(a.strip() for a in self.answers):
            raise ValueError("answers must be non-empty")
        if self.data_type == "qa" and len(self.question) != len(self.answers):
            raise ValueError(f"qa record has {len(self.question)} questions but {len(self.answers)} answers")
        return self


def window_span(record: "Record") -> tuple[int, int] | None:
    """Where a stage-1 window sits in its paragraph (doc_span); None for a whole document and for
    the records of every other stage."""
    return getattr(record, "doc_span", None)


def check_doc_span(span: tuple[int, int] | None, doc_max_length: int) -> None:
    """A window's paragraph fits what the compressor reads of a document: its memory goes after the
    paragraph's `length` tokens, and positions past doc_max_length were never trained (nor, far
    enough, the backbone's)."""
    if span is not None and span[1] > doc_max_length:
        raise ValueError(f"doc_span {list(span)}: a paragraph of {span[1]} tokens is longer than the "
                         f"compressor reads (model.doc_max_length={doc_max_length})")


class InstructRecord(BaseModel):
    """Stage 2: a question, k documents and the answer (`answer` or `gold_answer`)."""
    model_config = ConfigDict(extra="ignore")
    question: str = Field(min_length=1)
    docs: list[str]
    answers: list[str]

    _docs = field_validator("docs")(classmethod(lambda cls, v: _nonempty(v)))
    _fold = model_validator(mode="before")(classmethod(lambda cls, v: _pick_answers(v)))
    _ans = field_validator("answers", mode="before")(classmethod(lambda cls, v: _as_answer_list(v)))

    @property
    def answer(self) -> str:
        return self.answers[0]


def check_positions(record):
    """Validator shared by every record with candidate docs and gold indices into them."""
    bad = [i for i in record.pos_index if not 0 <= i < len(record.docs)]
    if bad:
        raise ValueError(f"pos_index {bad} out of range for {len(record.docs)} docs")
    return record


class EndToEndRecord(InstructRecord):
    """Stage 3: a question, N candidate documents, the answer(s), optional gold indices."""
    pos_index: list[int] = Field(default_factory=list)

    _positions = model_validator(mode="after")(check_positions)


class RetrievalRecord(EndToEndRecord):
    """Retrieval warm-up: a stage-3 record whose gold indices are required (they are the target)."""
    pos_index: list[int] = Field(min_length=1)


Record = Union[CompressPretrainRecord, InstructRecord, EndToEndRecord, RetrievalRecord]
RECORD_TYPES: dict[str, type[BaseModel]] = {
    "compress_pretrain": CompressPretrainRecord,
    "instruct": InstructRecord,
    "retrieval_warmup": RetrievalRecord,
    "end_to_end": EndToEndRecord,
}


def parse_record(obj: Any, stage: str, source: str = "<record>", line: int | None = None,
                 doc_max_length: int | None = None) -> Record:
    """One record of `stage`, validated; with `doc_max_length`, a stage-1 window's paragraph must
    also fit the compressor (check_doc_span). Any problem raises naming `source` and `line`."""
    record = _validate_record(obj, stage, source, line)
    if doc_max_length is not None:
        try:
            check_doc_span(window_span(record), doc_max_length)
        except ValueError as exc:
            raise RecordError(source, line, str(exc)) from None
    return record


def _validate_record(obj: Any, stage: str, source: str, line: int | None) -> Record:
    if stage not in RECORD_TYPES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if not isinstance(obj, dict):
        raise RecordError(source, line, f"expected a JSON object, got {type(obj).__name__}")
    try:
        return RECORD_TYPES[stage].model_validate(obj)
    except ValidationError as exc:
        raise RecordError(source, line, f"invalid {stage} record: {validation_problems(exc, QUOTED_FIELD)}") from None


def jsonl_texts(lines: Iterable[bytes], source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line; a line that is not UTF-8 raises naming `source`
    and the line. Lines end at b"\n" only: str.splitlines would also split at U+2028 and other
    separators, which JSON strings may hold as they are."""
    for number, raw in enumerate(lines, start=1):
        try:
            text = decode_text(raw)
        except ParseError as exc:
            raise RecordError(source, number, exc.why) from None
        if text.strip():
            yield number, text


def jsonl_objects(lines: Iterable[bytes], source: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) of each non-blank line; a line that is not UTF-8 JSON raises
    naming `source` and the line."""
    for number, text in jsonl_texts(lines, source):
        try:
            obj = parse_json(text)
        except ParseError as exc:
            raise RecordError(source, number, exc.why) from None
        yield number, obj


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) of a JSONL file, skipping blank lines; bad lines name their line."""
    with Path(path).open("rb") as fh:
        yield from jsonl_objects(fh, str(path))


# Characters str.splitlines (and so Ray Data's read_text) breaks lines at that json.dumps leaves
# unescaped with ensure_ascii=False; their JSON escapes keep one record on one line for any reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` as JSONL in one atomic step (a crash leaves the old file or none, never half
    of one); keys sorted, so rebuilding from the same inputs gives the same bytes. Returns the count."""
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True).translate(_LINE_BREAKS) + "\n" for row in rows]
    write_atomic(Path(path), "".join(lines))
    return len(lines)


def read_records(path: str | Path, stage: str, doc_max_length: int | None = None) -> list[Record]:
    """Read and validate a whole stage file (parse_record); the first bad record raises with file and line."""
    records = [parse_record(obj, stage, str(path), number, doc_max_length) for number, obj in iter_jsonl(path)]
    if not records:
        raise RecordError(str(path), None, "no records")
    return records
