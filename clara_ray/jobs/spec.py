"""Job specs (cluster/jobs/*.yaml): one file per pipeline step, submitted unchanged to any cluster.

A spec holds the keyword arguments of `JobSubmissionClient.submit_job` (entrypoint, runtime_env,
entrypoint_num_cpus / _num_gpus / _memory / _resources, metadata) plus `variables`, the defaults
of the `${NAME}` placeholders in its entrypoint. A placeholder takes, in order: a value passed by
the caller, the environment, the spec's default. Config overrides (`key.sub=value`, accepted by
every `pipelines.*` entry point) are appended to the entrypoint, so a laptop run of a GPU spec is
the same file with a CPU profile and a few overrides rather than a second spec.

`runtime_env.env_vars` values may name variables too (`HF_TOKEN: ${HF_TOKEN}`): filled the same way,
except that an entry whose variable is set nowhere is left out (a secret only some runs need).
"""
from __future__ import annotations

import json
import os
import shlex
import string
from pathlib import Path
from typing import Any, Mapping, Sequence

from clara_ray.config import InputError
from clara_ray.parsing import ParseError, parse_yaml, read_text

SUBMIT_KEYS = {"entrypoint", "runtime_env", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
               "entrypoint_resources", "metadata"}
SPEC_KEYS = SUBMIT_KEYS | {"variables"}
# A job must find everything it needs in the image: installing at job time is slow, unpinned
# and differs between nodes.
FORBIDDEN_RUNTIME_ENV = {"pip", "uv", "conda", "container", "image_uri", "py_executable"}
# Passed to jobs, never printed (see redacted).
SECRET_ENV_VARS = {"HF_TOKEN"}


class JobSpecError(InputError):
    pass


def _placeholders(template: str) -> set[str]:
    return {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(template)
            if m.group("named") or m.group("braced")}


def load_job_spec(path: str | Path, variables: Mapping[str, str] | None = None,
                  overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, check and fill one spec -> `submit_job` keyword arguments. Errors name the file and
    the key or variable."""
    path = Path(path)
    try:
        spec = parse_yaml(read_text(path))
    except (OSError, ParseError) as exc:
        raise JobSpecError(f"{path}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("entrypoint"), str):
        raise JobSpecError(f"{path}: a job spec is a mapping with an 'entrypoint' string")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise JobSpecError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    installs = FORBIDDEN_RUNTIME_ENV & set(spec.get("runtime_env") or {})
    if installs:
        raise JobSpecError(f"{path}: runtime_env {sorted(installs)} would install at job time; bake it into cluster/Dockerfile")
    defaults = spec.pop("variables", None) or {}
    if not isinstance(defaults, dict):
        raise JobSpecError(f"{path}: 'variables' must map NAME to a default value")
    values = {**{k: str(v) for k, v in defaults.items()}, **os.environ, **(variables or {})}
    missing = sorted(_placeholders(spec["entrypoint"]) - set(values))
    if missing:
        raise JobSpecError(f"{path}: entrypoint needs {', '.join(missing)} (pass --set NAME=value)")
    for item in overrides:
        if "=" not in item:
            raise JobSpecError(f"{path}: override {item!r} is not key=value")
    entrypoint = " ".join(string.Template(spec["entrypoint"]).substitute(values).split())
    spec["entrypoint"] = " ".join([entrypoint, *map(shlex.quote, overrides)])
    _fill_env_vars(path, spec, values)
    return spec


def _fill_env_vars(path: Path, spec: dict[str, Any], values: Mapping[str, str]) -> None:
    runtime_env = spec.get("runtime_env") or {}
    env_vars = runtime_env.get("env_vars")
    if not env_vars:
        return
    if not isinstance(env_vars, dict):
        raise JobSpecError(f"{path}: runtime_env.env_vars must map NAME to a value")
    filled = {name: string.Template(str(value)).substitute(values) for name, value in env_vars.items()
              if not _placeholders(str(value)) - set(values)}
    spec["runtime_env"] = {**runtime_env, "env_vars": filled}


def redacted(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with the values of SECRET_ENV_VARS masked, for printing."""
    runtime_env = dict(spec.get("runtime_env") or {})
    env_vars = {k: "<redacted>" if k in SECRET_ENV_VARS else v for k, v in (runtime_env.get("env_vars") or {}).items()}
    return {**spec, "runtime_env": {**runtime_env, "env_vars": env_vars}} if env_vars else dict(spec)


def with_working_dir(spec: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """The spec with a relative runtime_env working_dir resolved against `root` (the repo)."""
    runtime_env = dict(spec.get("runtime_env") or {})
    if "working_dir" in runtime_env and not Path(runtime_env["working_dir"]).is_absolute():
        runtime_env["working_dir"] = str((Path(root) / runtime_env["working_dir"]).resolve())
    return {**spec, "runtime_env": runtime_env}


def cli_line(spec: Mapping[str, Any], address: str) -> str:
    """The `ray job submit` command equivalent to submitting `spec`."""
    args = ["ray", "job", "submit", "--address", address]
    runtime_env = dict(spec.get("runtime_env") or {})
    if "working_dir" in runtime_env:
        args += ["--working-dir", str(runtime_env.pop("working_dir"))]
    if runtime_env:
        args += ["--runtime-env-json", json.dumps(runtime_env)]
    for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
        if key in spec:
            args += [f"--{key.replace('_', '-')}", str(spec[key])]
    if spec.get("entrypoint_resources"):
        args += ["--entrypoint-resources", json.dumps(spec["entrypoint_resources"])]
    return shlex.join(args) + " -- " + spec["entrypoint"]
