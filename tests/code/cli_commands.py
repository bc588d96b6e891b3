"""Documented `clara` commands as argv lists, and the repository paths they name: shared by the
checks of the --help examples (test_cli.py) and of the README walkthrough (test_readme.py)."""
from __future__ import annotations

import re
import shlex


def clara_commands(text: str) -> list[list[str]]:
    """The `clara ...` command lines in `text`, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\s*\n\s*", " ", text)
    return [shlex.split(line.strip(), comments=True) for line in joined.splitlines()
            if line.strip().startswith("clara ")]


def path_args(argv: list[str]) -> list[str]:
    """Relative path-like arguments: option values, key=value overrides and the items of
    `key=[a,b]` list overrides."""
    values = []
    for arg in argv:
        value = arg.split("=", 1)[1] if "=" in arg and not arg.startswith("-") else arg
        values += value.strip("[]").split(",") if value.startswith("[") else [value]
    return [v for v in values if "/" in v and not v.startswith(("-", "/", "http"))]
