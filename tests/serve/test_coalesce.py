"""BatchCoalescer: batches queued behind a busy model call are merged into its next call."""
from __future__ import annotations

import asyncio
import threading

import pytest

from serve.coalesce import BatchCoalescer


class RecordingModel:
    """Blocking call that records each call's items; the first call waits until released."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.release.wait(timeout=10)
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [10 * i for i in items]


async def _queue_behind_first(coalescer: BatchCoalescer, model: RecordingModel, later: list[list[int]]):
    first = asyncio.create_task(coalescer([0]))
    while not model.calls:  # the first call is running (and blocked)
        await asyncio.sleep(0.01)
    rest = [asyncio.create_task(coalescer(batch)) for batch in later]
    await asyncio.sleep(0.05)  # every later batch is now waiting
    model.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_waiting_batches_run_as_one_call_and_each_gets_its_own_results():
    model = RecordingModel()
    results = asyncio.run(_queue_behind_first(BatchCoalescer(model, max_items=16), model, [[1, 2], [3], [4, 5]]))
    assert model.calls == [[0], [1, 2, 3, 4, 5]]
    assert results == [[0], [10, 20], [30], [40, 50]]


def test_a_merged_call_never_exceeds_max_items():
    model = RecordingModel()
    results = asyncio.run(_queue_behind_first(BatchCoalescer(model, max_items=3), model, [[1, 2], [3], [4, 5]]))
    assert model.calls == [[0], [1, 2, 3], [4, 5]]
    assert results == [[0], [10, 20], [30], [40, 50]]


def test_a_failed_call_is_retried_per_item_and_only_the_culprit_gets_the_error():
    model = RecordingModel(fail_on=3)
    coalescer = BatchCoalescer(model, max_items=16)
    results = asyncio.run(_queue_behind_first(coalescer, model, [[1, 2], [3, 4]]))
    assert model.calls == [[0], [1, 2, 3, 4], [1], [2], [3], [4]]  # the merged call, then each item alone
    assert results[:2] == [[0], [10, 20]]
    culprit, neighbour = results[2]
    assert isinstance(culprit, ValueError) and "bad item 3" in str(culprit) and neighbour == 40
    assert asyncio.run(coalescer([7])) == [70]
    assert model.calls[-1] == [7]


@pytest.mark.parametrize("max_items", [1, 16])
def test_a_lone_batch_runs_at_once(max_items):
    model = RecordingModel()
    model.release.set()
    assert asyncio.run(BatchCoalescer(model, max_items=max_items)([4, 5])) == [40, 50]
    assert model.calls == [[4, 5]]
