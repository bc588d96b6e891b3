"""One item's failure (a file, an image, a chunk) becomes its error row, never the end of the run.

Every map stage builds its result rows through `guarded_row`: whatever the work raises (a
Pillow or docling error, a MemoryError, a bug) is caught there and turned into the row's
`error_kind` and `error`, which `errors.jsonl` reports. A worker killed outright (OOM killer,
segfault) cannot catch anything: `pipeline.run_stage` reports those items as `worker_died`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from PIL import Image

log = logging.getLogger(__name__)


class ItemError(Exception):
    """An expected failure of one item, with its `errors.jsonl` kind."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind

    def __reduce__(self):  # picklable across Ray tasks with its fields, as RecordError
        return type(self), (self.kind, str(self))


def read_item(path: Path) -> bytes:
    """The bytes of one item's file; a file that cannot be read is that item's failure."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ItemError("unreadable", f"cannot read the file: {exc.strerror or exc}") from None


def failure(exc: Exception) -> tuple[str, str]:
    """(kind, reason) of an exception raised by one item's work."""
    kind = getattr(exc, "kind", None)  # ItemError, ImageError, ApiCallError
    if isinstance(kind, str):
        return kind, str(exc) or type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError):
        return "image_too_large", str(exc)
    if isinstance(exc, MemoryError):
        return "out_of_memory", f"ran out of memory ({exc or 'MemoryError'})"
    log.warning("unexpected error, reported for this item only", exc_info=exc)
    return "unexpected_error", f"{type(exc).__name__}: {exc}"


def guarded_row(row: dict[str, Any], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`row` updated with the fields `work()` returns, or marked failed with its kind and reason."""
    try:
        row.update(work())
    except Exception as exc:  # one item's failure, whatever it is, must not end the run
        kind, reason = failure(exc)
        row.update(status="error", error_kind=kind, error=reason)
    return row
