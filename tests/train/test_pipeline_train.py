"""`pipelines.train` as users run it: the CLI, and `ray job submit` against a `ray start --head` cluster."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import REPO, TINY_MODEL


def test_cli_refuses_a_config_of_another_stage(tmp_path):
    import typer
    from typer.testing import CliRunner

    from pipelines.train import main

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--stage", "instruct", "--config",
                                      str(REPO / "configs/train/cpu/compress_pretrain.yaml")])
    assert result.exit_code != 0
    message = " ".join(result.output.replace("│", " ").split())  # undo rich's boxed line wrapping
    assert "is a compress_pretrain config, not instruct" in message


@pytest.mark.slow
def test_ray_job_submit_runs_a_stage(tmp_path):
    from clara_ray.jobs import LocalRayCluster

    storage = tmp_path / "runs"
    with LocalRayCluster(num_cpus=2) as cluster:
        command = [
            str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", cluster.address,
            "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": [".git", ".venv", "runs"]}),
            "--", sys.executable, "-m", "pipelines.train", "--stage", "compress_pretrain",
            "--config", "configs/train/cpu/compress_pretrain.yaml",
            f"model={json.dumps(TINY_MODEL)}", "max_steps=2", "batch.global_size=4", "batch.micro_size=1",
            f"run.storage_path={storage}", "run.name=job",
        ]
        done = subprocess.run(command, env=cluster.env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    summary = json.loads((storage / "job" / "summary.json").read_text())
    assert summary["stage"] == "compress_pretrain" and summary["final_metrics"]["step"] == 2
    assert (storage / "job" / "model" / "clara_config.json").exists()
    assert "step 2/2" in done.stdout  # progress lines reach the job log
