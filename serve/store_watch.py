"""Live store updates in a Retriever replica: notice a newly published version, open and verify it
off the request path, swap it in.

A model call takes the store it searches once (`watcher.store`) and keeps that reference to its
end, so a swap never changes the version of a request already running; the old store is freed
when the last of those requests lets go of it. Opening goes through `CompressedStore.open` (its
checkpoint check and checksums), in the watcher's thread. A version that fails there (vectors of
another checkpoint, a corrupted file) is refused once, with the reason logged, and the version in
service stays; versions are immutable, so a refused one is not retried until CURRENT moves on.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from clara_ray.store import CompressedStore, StoreError
from clara_ray.store import layout

log = logging.getLogger("ray.serve")


@dataclass
class CheckResult:
    """What one check found: the version in service after it, and why CURRENT's is not, if it is not."""
    version: int
    documents: int
    swapped: bool
    refused: str | None
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


class StoreWatcher:
    """Holds the store a replica serves; `check()` swaps in CURRENT's version if it is new and sound.

    `open_store` opens and verifies the published version (raising StoreError when it is unusable);
    `on_swap` is told about every store put in service, the first one included.
    """

    def __init__(self, root: str | Path, open_store: Callable[[], CompressedStore], interval_s: float,
                 on_swap: Callable[[CompressedStore], None] = lambda store: None):
        self.root = Path(root)
        self._open = open_store
        self._on_swap = on_swap
        self._lock = threading.Lock()  # one check at a time: the watcher's and a forced reload's
        self._refused: dict[str, str] = {}  # version name -> why it was refused
        self.store = open_store()  # a store unusable at start stops the replica, as before live updates
        on_swap(self.store)
        self._stop = threading.Event()
        if interval_s > 0:
            threading.Thread(target=self._watch, args=(interval_s,), name="store-watch", daemon=True).start()

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise; the version in service stays
                log.exception("store watch: check of %s failed", self.root)

    def stop(self) -> None:
        self._stop.set()

    def _serving(self) -> str:
        return layout.version_name(self.store.manifest.version)

    def check(self) -> CheckResult:
        """Swap in the published version if it is not the one in service and was not refused before."""
        with self._lock:
            started = time.perf_counter()
            try:
                published = layout.current_version_dir(self.root)
            except StoreError as exc:  # CURRENT names a version that is not there
                return self._result(started, False, self._refuse("the version CURRENT names", exc))
            name = published.name if published is not None else None
            if name is None or name == self._serving():
                return self._result(started, False, None)
            if name in self._refused:
                return self._result(started, False, self._refused[name])
            try:
                store = self._open()
            except StoreError as exc:
                return self._result(started, False, self._refuse(name, exc))
            old, self.store = self.store, store
            self._on_swap(store)
            result = self._result(started, True, None)
            log.info("store %s: now serving %s (%d documents, was %s), opened and verified in %.2f s",
                     self.root, name, len(store), layout.version_name(old.manifest.version), result.seconds)
            return result

    def _refuse(self, name: str, exc: StoreError) -> str:
        reason = str(exc)
        if name not in self._refused:
            log.warning("store %s: refusing %s, still serving %s: %s", self.root, name, self._serving(), reason)
        self._refused[name] = reason
        return reason

    def _result(self, started: float, swapped: bool, refused: str | None) -> CheckResult:
        return CheckResult(version=self.store.manifest.version, documents=len(self.store), swapped=swapped,
                           refused=refused, seconds=time.perf_counter() - started)
