"""Files that readers see whole or not at all.

Every file another process may read while it is being replaced (summaries, manifests, the store's
CURRENT pointer, resumable partial outputs, exported JSONL) is written to a temporary sibling,
flushed to disk and renamed over its target: a crash or a full disk leaves the old file, never
half of a new one. A whole directory another process reads (an exported model) is built beside
its target and swapped in (replace_dir); cache entries have their own build-and-rename in
`clara_ray.cache`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace `path` with `data` (str is written as UTF-8) in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            # without fsync a power loss after the rename can leave an empty file under the new name
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Replace the directory `target` whole with the one `fill(new)` creates at the path `new`, a
    sibling: an error in `fill` or a crash leaves the old directory, never half of a new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(staging / "new")
        if target.exists():
            os.replace(target, staging / "old")
        os.replace(staging / "new", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
