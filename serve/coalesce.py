"""Merge the batches that queue up behind a busy model into one model call.

Ray Serve's `@serve.batch` forms the next batch while the current one is still running (its
`max_concurrent_batches` semaphore gates execution, not formation), so under load a slow model
call finds many small batches waiting behind it, each cut after `batch_wait_timeout_s`. Run one
by one they lose most of what batching is for: on CPU, 16 clients ended up in batches of 1-3.
`BatchCoalescer` runs one model call at a time and hands it everything that is waiting, up to
`max_items`, then gives each batch its own slice of the results.

Results are outcomes: a value, or the exception raised for that item alone. A merged call that
fails is retried item by item (clara_ray/batches.py), so one bad request fails only itself, never
the requests (nor the other batches) that happened to share its model call.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Sequence

from clara_ray.batches import run_isolated


# Told of each model call: its number of items, and how long each item waited for it (seconds).
Observer = Callable[[int, list[float]], None]


class BatchCoalescer:
    def __init__(self, call: Callable[[list], Sequence[Any]], max_items: int,
                 observe: Observer = lambda size, waits: None):
        self.call = call  # blocking: runs in a worker thread so the replica keeps accepting requests
        self.max_items = max_items
        self.observe = observe
        self.lock = asyncio.Lock()  # also held by anything else that must not overlap a model call
        self._waiting: list[tuple[list, asyncio.Future, float]] = []

    async def __call__(self, items: list) -> list:
        """One outcome per item: its result, or the exception that item raised on its own."""
        mine = asyncio.get_running_loop().create_future()
        self._waiting.append((list(items), mine, time.perf_counter()))
        async with self.lock:
            while not mine.done():  # an earlier holder of the lock may have run our items already
                await self._run(self._take())
        return mine.result()

    def _take(self) -> list[tuple[list, asyncio.Future, float]]:
        """The oldest waiting batches, up to max_items items (always at least one batch)."""
        taken, size = [], 0
        while self._waiting and (not taken or size + len(self._waiting[0][0]) <= self.max_items):
            entry = self._waiting.pop(0)
            taken.append(entry)
            size += len(entry[0])
        return taken

    async def _run(self, taken: list[tuple[list, asyncio.Future, float]]) -> None:
        now = time.perf_counter()
        merged = [item for items, _, _ in taken for item in items]
        self.observe(len(merged), [now - since for items, _, since in taken for _ in items])
        try:
            results = await asyncio.to_thread(run_isolated, self.call, merged)
        except Exception as exc:  # the call broke its contract (wrong result count): nobody has a result
            for _, future, _ in taken:
                future.set_exception(exc)
            return
        except BaseException:  # cancelled: no batch may be left waiting for a call that never ends
            for _, future, _ in taken:
                future.cancel()
            raise
        start = 0
        for items, future, _ in taken:
            future.set_result(list(results[start:start + len(items)]))
            start += len(items)
