"""`pipelines.train` as users run it: the CLI, and `ray job submit` against a `ray start --head` cluster."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train_helpers import REPO, TINY_MODEL


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

# `ray job submit` of every stage, through its cluster/jobs spec: tests/cluster/test_job_specs_run.py
