"""One-off builds cached per machine (converted backbones, merged vLLM exports): built once, under a
file lock, in a clean process, and used only while their manifest still matches.

Why a clean process: transformers' `save_pretrained` writes no weights in a process whose
torch.distributed rank is not 0 (a Ray Train worker), silently; such a process may also hold
other global state (DeepSpeed's zero.Init) that changes how a model is built. A fresh interpreter
has none of it, whichever process first needs the entry.

Why a lock: the workers of one node (training ranks, Serve replicas) all need the entry at once;
one builds, the others wait and then use it.

An entry is complete when it has config.json, at least one *.safetensors file and a manifest
whose non-empty checksum table matches those files; anything else is rebuilt with a warning.
Builds write to a temporary sibling that is renamed into place, so a crash never leaves a
half-written entry.

The cache lives in $CLARA_RAY_CACHE, else the platform's user cache dir.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import platformdirs
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

# The name of the first backbone cache layout, kept so that entries built before stay valid.
MANIFEST = "clara_backbone.json"
# Set in the interpreter `in_clean_process` starts: builds nested in a build run there directly.
_CLEAN = False


class CacheBuildError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("CLARA_RAY_CACHE") or platformdirs.user_cache_dir("clara-ray"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_checksums(directory: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(directory.glob("*.safetensors"))}


def entry_problem(directory: Path) -> str | None:
    """Why `directory` is not a complete cache entry, or None when it is."""
    if not directory.is_dir():
        return "missing"
    if not (directory / "config.json").is_file():
        return "no config.json"
    try:
        recorded = json.loads((directory / MANIFEST).read_text())["checksums"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable {MANIFEST} ({exc!r})"
    if not recorded:
        return f"{MANIFEST} records no weight file"
    if recorded != weight_checksums(directory):
        return "its weight files do not match the checksums in its manifest"
    return None


def ensure_built(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, first built by `build(directory)` (which writes a HF model directory) unless it
    is already a complete entry."""
    if entry_problem(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        problem = entry_problem(target)
        if problem is None:
            return target  # built by another process while this one waited
        if target.exists():
            _discard(target, problem)
        _build_into(target, build)
    return target


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    # A sibling file: the target itself is replaced whole. The OS drops the lock of a process
    # that dies, so a crashed build does not block the next one.
    lock = FileLock(target.parent / f".{target.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to build %s", target)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _discard(target: Path, problem: str) -> None:
    # Delete only what is ours: an entry of this cache, or a directory carrying our manifest
    # (a user-chosen export directory). Anything else is left for its owner to sort out.
    if not ((target / MANIFEST).exists() or target.resolve().is_relative_to(cache_root().resolve())):
        raise CacheBuildError(f"{target} exists but is not a complete build ({problem}); "
                              "remove it or choose another directory")
    log.warning("cached %s is incomplete (%s); rebuilding it", target, problem)
    shutil.rmtree(target)


def _build_into(target: Path, build: Callable[[Path], None]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        log.info("building %s (one-off)", target)
        build(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"name": target.name, "checksums": weight_checksums(tmp)}, indent=1))
        problem = entry_problem(tmp)
        if problem is not None:
            raise CacheBuildError(f"building {target} produced an incomplete directory ({problem}); nothing cached")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def in_clean_process(function: Callable[..., None], *args: str) -> Callable[[Path], None]:
    """A build that runs `function(directory, *args)` in a fresh interpreter (see the module doc).
    `function` must be a module-level function; `args` strings."""
    def build(directory: Path) -> None:
        if _CLEAN:
            function(directory, *args)
            return
        # The caller's sys.path, so the child imports the same code (a Ray job's working dir).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        argv = [sys.executable, "-m", "clara_ray.cache", f"{function.__module__}:{function.__qualname__}",
                str(directory), *args]
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise CacheBuildError(f"building {directory.name} with {function.__qualname__} failed "
                                  f"(exit {done.returncode}):\n{done.stderr[-4000:]}")
    return build


def _run_clean(argv: list[str]) -> None:
    global _CLEAN
    _CLEAN = True
    function, directory, *args = argv
    module, _, name = function.partition(":")
    getattr(importlib.import_module(module), name)(Path(directory), *args)


if __name__ == "__main__":
    # Through the imported module, not this __main__ copy, so that nested builds see _CLEAN.
    from clara_ray import cache

    cache._run_clean(sys.argv[1:])
