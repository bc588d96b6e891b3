"""The input files of a run, and an error row for each entry that looks like an input but is not one.

Hidden entries (any path part starting with a dot) are left out on purpose. Symbolic links to
files are followed; links to directories are not (a link may point back up the tree).
"""
from __future__ import annotations

import errno
import stat
from pathlib import Path
from typing import Any, Optional

from clara_ray.ingest.extract import INPUT_SUFFIXES
from clara_ray.ingest.failures import ItemError, read_item
from clara_ray.ingest.hashing import content_key

_SPECIAL = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}


def error_row(stage: str, source: str, key: str, kind: str, reason: str) -> dict[str, str]:
    """One line of errors.jsonl."""
    return {"stage": stage, "source": source, "key": key, "kind": kind, "reason": reason}


def _input_bytes(path: Path) -> Optional[bytes]:
    """The content of a regular file, None for a directory to walk; ItemError for anything else."""
    try:
        mode = path.stat().st_mode  # follows symbolic links
    except FileNotFoundError:
        if not path.is_symlink():
            raise ItemError("unreadable", "the file disappeared while the run started") from None
        raise ItemError("broken_link", f"symbolic link to a missing target ({path.readlink()})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ItemError("symlink_loop", "symbolic link that points (through other links) to itself") from None
        raise ItemError("unreadable", f"cannot inspect the entry: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        if path.is_symlink():
            raise ItemError("not_a_file", "symbolic link to a directory (not followed)")
        if path.suffix.lower() in INPUT_SUFFIXES:
            raise ItemError("not_a_file", f"a directory named like a {path.suffix} file (its files are read as usual)")
        return None
    if not stat.S_ISREG(mode):
        raise ItemError("not_a_file", f"{_SPECIAL.get(stat.S_IFMT(mode), 'a special file')}, not a regular file")
    return read_item(path)


def discover(input_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every visible file under input_dir keyed by content (identical files count once), and the
    error rows of the entries skipped."""
    rows, skipped, seen = [], [], set()
    for path in sorted(input_dir.rglob("*")):
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            data = _input_bytes(path)
        except ItemError as exc:
            skipped.append(error_row("discover", str(rel), "", exc.kind, str(exc)))
            continue
        if data is None:
            continue
        key = content_key(data)
        if key not in seen:
            seen.add(key)
            rows.append({"key": key, "path": str(path), "source": str(rel)})
    return rows, skipped
