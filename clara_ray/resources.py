"""Files that ship with clara-ray (configs, examples, job specs), found by their repository path.

Defaults and documented commands name files of the source tree, e.g.
`configs/train/cpu/compress_pretrain.yaml` or `examples/data/pretrain_data.jsonl`. A relative
path that does not exist where the user runs is looked up in the source checkout this package
runs from, else in the copy an installed wheel carries (`clara_ray/_shipped`, written by
setup.py), so the same commands work in a checkout and after `pip install clara-ray` anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

_PACKAGE = Path(__file__).resolve().parent
WHEEL_COPY = "_shipped"  # the directory under clara_ray/ that setup.py fills (keep the two in step)


def shipped_root() -> Path:
    """Where repository-relative files live: the wheel's copy, else the checkout's root."""
    copy = _PACKAGE / WHEEL_COPY
    return copy if copy.is_dir() else _PACKAGE.parent


def shipped(relative: str | Path) -> Path:
    """The shipped file at repository path `relative` (it may not exist: callers report that)."""
    return shipped_root() / relative


def resolve_path(path: str | Path) -> Path:
    """`path` as given if it exists (or is absolute, or not a shipped file); else the shipped one."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    candidate = shipped(given)
    return candidate if candidate.exists() else given


def _resolve_str(path: str) -> str:
    return str(resolve_path(path)) if "://" not in path else path


# Config fields naming an input file that may be a shipped example (not outputs: those stay relative).
ShippedPath = Annotated[Path, AfterValidator(resolve_path)]
ShippedPathStr = Annotated[str, AfterValidator(_resolve_str)]
