"""run_isolated: a failing batch is retried one item at a time, each item gets its own outcome."""
from __future__ import annotations

import pytest

from clara_ray.batches import run_isolated


def _tokenize(texts: list[str]) -> list[int]:
    """A real batched call that refuses a whole batch for one bad text, as tokenizers do."""
    return [len(t.encode("utf-8")) for t in texts]


def test_each_item_gets_its_own_outcome_after_a_failed_batch():
    outcomes = run_isolated(_tokenize, ["ab", "\ud800", "cde", "x\udfff"])
    assert outcomes[0] == 2 and outcomes[2] == 3
    assert all(isinstance(o, UnicodeEncodeError) for o in (outcomes[1], outcomes[3]))


def test_a_failure_of_the_batch_alone_costs_nobody_a_result():
    calls = []

    def only_small_batches(items):
        calls.append(list(items))
        if len(items) > 2:
            raise RuntimeError("out of memory")
        return [i * 2 for i in items]

    assert run_isolated(only_small_batches, [1, 2, 3]) == [2, 4, 6]
    assert calls == [[1, 2, 3], [1], [2], [3]]


def test_a_lone_item_is_not_retried_and_no_items_make_no_call():
    calls = []

    def failing(items):
        calls.append(items)
        raise TypeError("bad input")

    [outcome] = run_isolated(failing, ["x"])
    assert isinstance(outcome, TypeError) and calls == [["x"]]
    assert run_isolated(failing, []) == [] and len(calls) == 1


def test_a_call_returning_the_wrong_number_of_results_is_a_bug_not_an_item_error():
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        run_isolated(lambda items: items[:2], [1, 2, 3])
