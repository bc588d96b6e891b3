"""Submit a job spec from cluster/jobs/ to a Ray cluster.

    python -m cluster.submit cluster/jobs/train_instruct.yaml --address http://127.0.0.1:8265 \
        --set CLARA_SHARED=/mnt/cluster_storage/clara-ray --set CLARA_RUNS=s3://<bucket>/clara-ray/runs

    # the same spec on a laptop cluster: CPU profile, tiny model, two steps
    python -m cluster.submit cluster/jobs/train_instruct.yaml --set TRAIN_CONFIGS=configs/train/cpu ... \
        -o model.backbone=tiny-random -o max_steps=2

`${VAR}` in a spec's entrypoint is filled from --set, else the environment, else the spec's
`variables`; each -o/--override is appended as a config override. The equivalent plain
`ray job submit` line is printed, so a spec and its CLI line never drift apart (secrets such as
HF_TOKEN, passed from the environment in runtime_env env_vars, are shown as <redacted>).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from clara_ray.jobs.spec import SECRET_ENV_VARS, JobSpecError, cli_line, load_job_spec, redacted
from clara_ray.resources import resolve_path
from pipelines.cli_step import cli_step


def parse_variables(items: list[str]) -> dict[str, str]:
    variables = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise JobSpecError(f"--set {item!r} is not NAME=value")
        variables[name] = value
    return variables


@cli_step
def main(
    spec: Annotated[Path, typer.Argument(help="a file in cluster/jobs/")],
    address: Annotated[str, typer.Option(help="Ray dashboard address")] = "http://127.0.0.1:8265",
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="NAME=value for ${NAME} in the entrypoint")] = None,
    override: Annotated[Optional[List[str]], typer.Option("--override", "-o", help="key.sub=value config override")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the equivalent `ray job submit` line only")] = False,
) -> None:
    """Submit one job spec (cluster/jobs/*.yaml) to a Ray cluster; print its id and the CLI line.

    The ingest step of a cluster whose shared volume holds documents/; --dry-run
    prints the equivalent `ray job submit` line and submits nothing, --address
    names the cluster's dashboard:

      clara submit cluster/jobs/ingest.yaml --dry-run \\
        --set CLARA_SHARED=/mnt/cluster_storage/clara-ray
    """
    job = load_job_spec(resolve_path(spec), parse_variables(set_ or []), override or [])
    typer.echo(cli_line(redacted(job), address))
    passed = SECRET_ENV_VARS & set(job.get("runtime_env", {}).get("env_vars", {}))
    if passed:
        typer.echo(f"({', '.join(sorted(passed))} passed to the job from the environment; <redacted> above)")
    if dry_run:
        return
    from clara_ray.jobs import submit

    name = job.get("metadata", {}).get("step", spec.stem)
    _, job_id = submit(address, name, **job)
    typer.echo(f"submitted {job_id}; follow with: ray job logs --address {address} -f {job_id}")


if __name__ == "__main__":
    typer.run(main)
