"""Where things live in a store directory, and the atomic CURRENT pointer.

    <store>/CURRENT                 name of the published version ("v000003"), swapped with os.replace
    <store>/versions/v000003/       manifest.json + index.faiss (immutable once renamed into place)
    <store>/shards/<name>/          immutable shards shared by every version that lists them
    <store>/.lock                   held by the one writer

Readers resolve CURRENT once and then only read immutable files, so a publish never changes what
an open reader sees, and a crashed writer never leaves a half-visible version.
"""
from __future__ import annotations

from pathlib import Path

from clara_ray.atomic import write_atomic
from clara_ray.parsing import ParseError, read_text
from clara_ray.store.errors import StoreError

CURRENT = "CURRENT"
VERSIONS = "versions"
INDEX_FILE = "index.faiss"
LOCK = ".lock"


def version_name(number: int) -> str:
    return f"v{number:06d}"


def current_version_dir(root: Path) -> Path | None:
    pointer = root / CURRENT
    if not pointer.exists():
        return None
    try:
        name = read_text(pointer).strip()
    except ParseError as exc:
        raise StoreError(f"{pointer}: {exc}") from None
    version_dir = root / VERSIONS / name
    if not name or not version_dir.is_dir():
        raise StoreError(f"{pointer}: points at missing version {name!r}")
    return version_dir


def next_version_number(root: Path) -> int:
    # versions renamed into place by a writer that crashed before swapping CURRENT still count
    numbers = [int(p.name[1:]) for p in (root / VERSIONS).glob("v[0-9]*") if p.name[1:].isdigit()]
    return max(numbers, default=0) + 1


def swap_current(root: Path, name: str) -> None:
    write_atomic(root / CURRENT, name + "\n")
