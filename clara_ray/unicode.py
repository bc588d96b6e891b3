"""Text that cannot be encoded: lone UTF-16 surrogates.

JSON may spell one (`"\\ud800"`) and Python keeps it in a str, but it is not Unicode text: UTF-8
cannot encode it, so tokenizers refuse it (and fail every other text of their batch with it) and
Arrow/Parquet cannot store it. Every entry point that takes text checks it with `encoding_problem`.
"""
from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def encoding_problem(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8, or None when it can."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    return f"contains a lone surrogate U+{code:04X} at character {found.start()}, which is not Unicode text"


def printable(text: str) -> str:
    """`text` with any lone surrogate escaped (\\udxxx), safe to put in JSON, logs and files."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
