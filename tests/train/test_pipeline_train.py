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


def test_an_input_error_on_the_workers_is_the_clis_one_line(ray_cluster, tmp_path):
    """A previous-stage export whose config reads but whose weights do not: the driver's checks pass,
    each Ray Train worker stops on CheckpointError, and the CLI prints that error, not Ray's report."""
    import typer
    from typer.testing import CliRunner

    from clara_ray import CLaRa, CLaRaConfig
    from pipelines.train import main

    CLaRa.from_config(CLaRaConfig(**TINY_MODEL)).save_pretrained(tmp_path / "prev")
    damaged = tmp_path / "prev" / "adapters" / "generator.safetensors"
    damaged.write_bytes(b"not safetensors")
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, [
        "--stage", "instruct", "--config", str(REPO / "configs/train/cpu/instruct.yaml"),
        f"init_from={tmp_path / 'prev'}", f"data.paths=[{REPO / 'examples/data/instruction_data.jsonl'}]",
        f"run.storage_path={tmp_path / 'runs'}", "run.max_failures=0", "batch.global_size=4", "batch.micro_size=1",
        "max_steps=1"])
    assert result.exit_code == 2, (result.output, result.exception)
    # the last line: Ray forwards the workers' own logs to the driver's stderr before it
    assert result.stderr.splitlines()[-1].startswith(f"error: {damaged}: unreadable weights "
                                                     "(Error while deserializing header"), result.stderr

# `ray job submit` of every stage, through its cluster/jobs spec: tests/cluster/test_job_specs_run.py


def test_a_bad_record_is_the_clis_one_line_naming_file_and_line(ray_cluster, tmp_path):
    """The record is validated in a Ray Data read task; its error must cross back to the driver
    whole (it pickles by its fields) to be printed as one line, exit 2."""
    import typer
    from typer.testing import CliRunner

    from pipelines.train import main

    data = tmp_path / "windows.jsonl"
    data.write_text(json.dumps({"data_type": "paraphrase", "answers": ["w"], "docs": ["w"]}) + "\n"
                    + json.dumps({"data_type": "paraphrase", "answers": ["w"], "docs": ["w"], "doc_span": [0, 10**12]})
                    + "\n")
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, [
        "--stage", "compress_pretrain", "--config", str(REPO / "configs/train/cpu/compress_pretrain.yaml"),
        f"model={json.dumps(TINY_MODEL)}", f"data.paths=[{data}]", f"run.storage_path={tmp_path / 'runs'}"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.splitlines()[-1] == (
        f"error: {data}:2: doc_span [0, 1000000000000]: a paragraph of 1000000000000 tokens is "
        f"longer than the compressor reads (model.doc_max_length={TINY_MODEL['doc_max_length']})")
    assert not (tmp_path / "runs").exists()  # nothing started, nothing half-written
