"""JSON and YAML from the files and arguments users give, with one error for every way they fail.

The standard parsers raise more than their documented errors. `json.loads` raises ValueError for an
integer past Python's digit limit (4,300 digits) and RecursionError for arrays nested a few thousand
deep; PyYAML raises RecursionError too; and a binary file read as text raises UnicodeDecodeError
before any parser runs. Here each of them is a `ParseError` saying why, with the line when it is
known, so every reader reports it as one line naming its file (docs/reliability.md) instead of a
traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


class ParseError(ValueError):
    """Text that does not parse: `why`, and the 1-based `line` of the text when known."""

    def __init__(self, why: str, line: int | None = None):
        super().__init__(why if line is None else f"line {line}: {why}")
        self.why, self.line = why, line

    def __reduce__(self):  # picklable across Ray tasks with its fields, as RecordError
        return type(self), (self.why, self.line)


def decode_text(data: bytes) -> str:
    """`data` as UTF-8 text; a ParseError names the line and column of the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ParseError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})", line) from None


def read_text(path: str | Path) -> str:
    """A file's UTF-8 text (OSError when it cannot be read, ParseError when it is not text)."""
    return decode_text(Path(path).read_bytes())


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, with every failure a ParseError (the line is the text's own, 1 for one line)."""
    if isinstance(text, bytes):
        text = decode_text(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise ParseError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer past the digit limit
        raise ParseError(f"invalid JSON: {exc}") from None


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, with every failure a ParseError naming the line where YAML says it is."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        why = ", ".join(part for part in (exc.context, exc.problem) if part)
        if mark is None:
            raise ParseError(f"invalid YAML: {why}") from None
        raise ParseError(f"invalid YAML: {why} (column {mark.column + 1})", mark.line + 1) from None
    except yaml.YAMLError as exc:  # a character YAML refuses (a control character, a lone surrogate)
        raise ParseError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ParseError("invalid YAML: nested too deeply") from None
