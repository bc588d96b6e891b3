"""What every entry point shares, whether run as `clara <step>` or `python -m pipelines.<step>`:
logging set up so progress messages reach the user, and input errors reported on one line.

    @cli_step
    def main(config: Path, ...) -> None: ...

Input errors (clara_ray.config.InputError: bad YAML, unknown field, invalid override, bad data,
missing file) end the run with exit code 2 and `error: <message naming the file and field>`;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable, TypeVar

import typer

from clara_ray.config import InputError

F = TypeVar("F", bound=Callable)

LOG_LEVEL_ENV = "CLARA_LOG_LEVEL"  # `clara --log-level` sets it, so steps run as subprocesses or jobs inherit it
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Our loggers show progress at INFO; third-party libraries (Ray, transformers, docling) only warnings.
OWN_LOGGERS = ("clara_ray", "pipelines", "serve", "bench", "experiments", "cluster")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def check_level(level: str) -> str:
    name = level.upper()
    if name not in LEVELS:
        raise InputError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    return name


def configure_logging(level: str | None = None) -> None:
    """Our loggers at `level` (default $CLARA_LOG_LEVEL, else INFO), everything else at WARNING."""
    name = check_level(level or os.environ.get(LOG_LEVEL_ENV) or "INFO")
    root = logging.getLogger()
    if not any(getattr(h, "clara_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler.clara_cli = True
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in OWN_LOGGERS:
        logging.getLogger(logger).setLevel(name)


def one_line(exc: BaseException) -> str:
    # An error raised in a Ray task comes back wrapped (RayTaskError(StoreError)), its message the
    # task's traceback; Ray Data also appends its retry advice to the cause's. The user's line is
    # the first of the cause.
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__


def cli_step(main: F) -> F:
    """Wrap an entry point's `main`: logging configured, input errors -> one line on stderr, exit 2."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            configure_logging()
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError, NotADirectoryError) as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]
