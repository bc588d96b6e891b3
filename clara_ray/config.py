"""Typed configs loaded from YAML and overridden from the command line.

Every stage has one pydantic model; `load_config` reads an optional YAML file and then applies
`key.sub=value` overrides (values parsed as YAML, so `lr=1e-4` and `tags=[a,b]` work).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from clara_ray.parsing import ParseError, parse_yaml, read_text
from clara_ray.resources import resolve_path

T = TypeVar("T", bound=BaseModel)


class InputError(ValueError):
    """Input the user can fix (a config file, an override, a data file, a path). Entry points print
    the message, which names the file and the field, on one line and exit with code 2."""


class ConfigError(InputError):
    """A config file or override that does not fit its stage's schema."""


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ["a.b=1", "c=x"] into {"a": {"b": 1}, "c": "x"}."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = parse_yaml(raw) if raw != "" else ""
        except ParseError as exc:
            shown = item if len(item) <= 100 else item[:100] + "..."
            raise ConfigError(f"override {shown!r}: {exc.why}") from None
    return tree


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` laid over `base`, nested mappings merged key by key (neither input is modified)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML file holds; `path` may name a shipped config (clara_ray.resources)."""
    try:
        loaded = parse_yaml(read_text(resolve_path(path)))
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"config file not found: {path}") from None
    except ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded or {}


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file (optional) plus overrides; errors name the file and field."""
    data = read_yaml_mapping(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    data = merge_dicts(data, parse_overrides(overrides))
    return validate_config(cls, data, f"{source} (with overrides {overrides or []})")


def validate_config(cls: type[T], data: dict[str, Any], source: str) -> T:
    """`cls` from `data`; a ConfigError names `source` and every bad field on one line."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_problems(exc)}") from None


QUOTED_FIELD = "field '{}'"  # how errors in data records name a field (configs name it bare)


def validation_problems(exc: ValidationError, field: str = "{}", limit: int | None = None) -> str:
    """A pydantic error on one line: each bad field's dotted path (put into `field`) and why."""
    def problem(err) -> str:
        path = ".".join(str(part) for part in err["loc"])
        return f"{field.format(path)}: {err['msg']}" if path else err["msg"]

    return "; ".join(problem(err) for err in exc.errors()[:limit])
