"""One failing item must not fail the batch it was computed in.

A batched model call raises for the whole batch when one of its inputs is bad (a tokenizer refuses
one text, one prompt does not fit), so every other input of that call would share an error that
is not theirs. `run_isolated` charges a failure to the items that cause it: the batch is retried
one item at a time, and each item gets its own result or its own exception. Every batched path
uses it: Serve's Retriever and Generator (serve/coalesce.py), precompress, evaluation.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def run_isolated(call: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R | Exception]:
    """`call(items)` as one batch; if that raises, `call([item])` for each item alone.

    Returns one outcome per item: its result, or the exception its own call raised. A failure
    that does not come back when items run alone (memory, a transient fault) costs nothing but time.
    """
    items = list(items)
    if not items:
        return []
    try:
        results = list(call(items))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
        log.warning("a batch of %d failed (%s: %s); retrying each item alone", len(items), type(exc).__name__, exc)
        return [_alone(call, item) for item in items]
    if len(results) != len(items):  # a bug in `call`, not an item's fault: fail loudly
        raise RuntimeError(f"batched call returned {len(results)} results for {len(items)} items")
    return results


def _alone(call: Callable[[list[T]], Sequence[R]], item: T) -> R | Exception:
    try:
        return call([item])[0]
    except Exception as exc:
        return exc
