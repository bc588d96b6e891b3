"""Submit a job spec from cluster/jobs/ to a Ray cluster.

    python -m cluster.submit cluster/jobs/train_instruct.yaml --address http://127.0.0.1:8265 \
        --set CLARA_SHARED=/mnt/cluster_storage/clara-ray --set CLARA_RUNS=s3://<bucket>/clara-ray/runs

A spec holds exactly the keyword arguments of `JobSubmissionClient.submit_job` (entrypoint,
runtime_env, entrypoint_num_cpus / _num_gpus / _memory / _resources, metadata); `${VAR}` in the
entrypoint is filled from --set, else from the environment. The equivalent plain CLI line is
printed, so a spec and its `ray job submit` line never drift apart.
"""
from __future__ import annotations

import os
import re
import shlex
import string
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer
import yaml

SPEC_KEYS = {"entrypoint", "runtime_env", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
             "entrypoint_resources", "metadata"}
# A job must find everything it needs in the image: installing at job time is slow, unpinned
# and differs between nodes.
FORBIDDEN_RUNTIME_ENV = {"pip", "uv", "conda", "container", "image_uri", "py_executable"}


class JobSpecError(ValueError):
    pass


def load_job_spec(path: str | Path, variables: dict[str, str] | None = None) -> dict[str, Any]:
    """Read, check and fill one spec; errors name the file and the key or variable."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("entrypoint"), str):
        raise JobSpecError(f"{path}: a job spec is a mapping with an 'entrypoint' string")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise JobSpecError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    installs = FORBIDDEN_RUNTIME_ENV & set(spec.get("runtime_env") or {})
    if installs:
        raise JobSpecError(f"{path}: runtime_env {sorted(installs)} would install at job time; bake it into cluster/Dockerfile")
    values = {**os.environ, **(variables or {})}
    needed = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(spec["entrypoint"])
              if m.group("named") or m.group("braced")}
    missing = sorted(needed - set(values))
    if missing:
        raise JobSpecError(f"{path}: entrypoint needs {', '.join(missing)} (pass --set NAME=value)")
    spec["entrypoint"] = " ".join(string.Template(spec["entrypoint"]).substitute(values).split())
    return spec


def cli_line(spec: dict[str, Any], address: str) -> str:
    """The `ray job submit` command equivalent to submitting `spec`."""
    import json

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


def main(
    spec: Annotated[Path, typer.Argument(help="a file in cluster/jobs/")],
    address: Annotated[str, typer.Option(help="Ray dashboard address")] = "http://127.0.0.1:8265",
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="NAME=value for ${NAME} in the entrypoint")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the equivalent `ray job submit` line only")] = False,
) -> None:
    """Submit one job spec; print its id and the equivalent CLI line."""
    variables = {}
    for item in set_ or []:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise typer.BadParameter(f"{item!r} is not NAME=value", param_hint="--set")
        variables[name] = value
    try:
        job = load_job_spec(spec, variables)
    except JobSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="SPEC") from None
    typer.echo(cli_line(job, address))
    if dry_run:
        return
    from ray.job_submission import JobSubmissionClient

    job_id = JobSubmissionClient(address).submit_job(**job)
    typer.echo(f"submitted {job_id}; follow with: ray job logs --address {address} -f {job_id}")


if __name__ == "__main__":
    typer.run(main)
