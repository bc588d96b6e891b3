"""The `clara` command as a user meets it: every step, a real example in each --help, input errors
on one line with exit code 2, and logging that lets progress messages through."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import STEPS, app
from pipelines.cli_step import LOG_LEVEL_ENV
from tests.code.cli_commands import clara_commands, path_args

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("configs/", "examples/", "cluster/", "experiments/", "serve/")
OUTPUT_OVERRIDES = ("output_dir", "workdir")


def _help(step: str) -> str:
    result = CliRunner().invoke(app, [step, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def examples(step: str) -> list[list[str]]:
    """The `clara ...` commands shown in a step's --help."""
    return clara_commands(_help(step))


def _outputs(argv: list[str]) -> list[str]:
    """What a documented command writes: --out / output_dir= / workdir=, and a training stage's export."""
    found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    found += [a.split("=", 1)[1] for a in argv if "=" in a and a.split("=", 1)[0] in OUTPUT_OVERRIDES]
    if argv[1] == "train":
        run = yaml.safe_load((REPO / argv[argv.index("--config") + 1]).read_text())["run"]
        found.append(f"{run['storage_path']}/{run['name']}/model")
    return found


def test_clara_lists_every_step():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for step in ("ingest", "train", "export", "precompress", "serve", "eval", "report", "demo", "submit", "bench", "reproduce"):
        assert step in STEPS and re.search(rf"│ {step} ", result.output), step


@pytest.mark.parametrize("step", STEPS)
def test_help_shows_an_example_whose_paths_exist_or_come_from_a_documented_step(step):
    documented = [out for other in STEPS for argv in examples(other) for out in _outputs(argv)]
    commands = examples(step)
    assert commands and all(argv[1] == step for argv in commands), commands
    for argv in commands:
        mine = _outputs(argv)
        for path in path_args(argv):
            if path.startswith(SHIPPED):
                assert (REPO / path).exists(), f"`{shlex.join(argv)}` names {path}, which is not in the repository"
            elif path not in mine:
                assert any(path == out or path.startswith(out.rstrip("/") + "/") for out in documented), \
                    f"`{shlex.join(argv)}` reads {path}, which no documented step writes (outputs: {documented})"


def test_a_help_example_runs_as_shown():
    """The commands that run in seconds: a job spec's dry run and the reproduction's plan."""
    for step in ("submit", "reproduce"):
        for argv in examples(step):
            result = CliRunner().invoke(app, argv[1:])
            assert result.exit_code == 0, f"{shlex.join(argv)}: {result.output}"


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("stage: instruct\n  optim: [\n")
    (tmp_path / "unknown.yaml").write_text("chunk:\n  max_chars: 1500\n")
    (tmp_path / "latin1.json").write_bytes(b'{"data": [{"title": "Caf\xe9"}]}')
    (tmp_path / "utf16.yaml").write_text("stage: instruct\n", encoding="utf-16")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "clara_config.json").write_text('{"backbone": ')  # a copy cut short
    (tmp_path / "config-only").mkdir()  # enough for the checks made before anything loads
    (tmp_path / "config-only" / "clara_config.json").write_text('{"backbone": "tiny-random"}')
    record = (REPO / "examples/data/pretrain_data.jsonl").read_text().splitlines()[0] + "\n"
    (tmp_path / "monitor-one.jsonl").write_text(record)
    (tmp_path / "monitor-same.jsonl").write_text(record * 3)
    return tmp_path


CASES = {
    "invalid YAML": (["train", "--stage", "instruct", "--config", "{tmp}/bad.yaml"], ["{tmp}/bad.yaml", "line 2"]),
    "unknown field": (["ingest", "--config", "{tmp}/unknown.yaml"], ["{tmp}/unknown.yaml", "chunk.max_chars"]),
    "missing file": (["demo", "--config", "{tmp}/none.yaml"], ["{tmp}/none.yaml", "not found"]),
    "invalid override": (["train", "--stage", "instruct", "--config", "configs/train/cpu/instruct.yaml",
                          "optim.lr=[1,"], ["optim.lr=[1,"]),
    "bad value": (["precompress", "--checkpoint", "c", "--corpus", "c", "--out", "o", "index.kind=nope"],
                  ["index.kind"]),
    "eval field": (["eval", "--config", "experiments/configs/eval_squad_cpu.yaml", "harness.top_k=0"],
                   ["experiments/configs/eval_squad_cpu.yaml", "harness.top_k"]),
    "serve setting": (["serve", "--checkpoint", "c", "--store", "s", "limits.max_top_k=0"],
                      ["serve/config.yaml", "limits.max_top_k"]),
    "wrong stage": (["train", "--stage", "instruct", "--config", "configs/train/cpu/compress_pretrain.yaml"],
                    ["configs/train/cpu/compress_pretrain.yaml", "not instruct"]),
    "job variable": (["submit", "cluster/jobs/ingest.yaml"], ["cluster/jobs/ingest.yaml", "CLARA_SHARED"]),
    "missing data": (["build-squad-data", "--squad", "{tmp}/none.json", "--out", "{tmp}/o"], ["{tmp}/none.json"]),
    "unknown benchmark": (["bench", "--only", "nope"], ["nope"]),
    "unfinished evaluation": (["report", "{tmp}", "--out", "{tmp}/r"], ["{tmp}/summary.json", "not found"]),
    "data not UTF-8": (["build-squad-data", "--squad", "{tmp}/latin1.json", "--out", "{tmp}/o"],
                       ["{tmp}/latin1.json:1: not UTF-8 text (byte 0xe9 at column 25)"]),
    "damaged checkpoint": (["eval", "--config", "experiments/configs/eval_squad_cpu.yaml", "checkpoint={tmp}/ckpt",
                            "output_dir={tmp}/eval"], ["{tmp}/ckpt/clara_config.json: line 1: invalid JSON"]),
    "damaged checkpoint to precompress": (["precompress", "--checkpoint", "{tmp}/ckpt", "--corpus", "{tmp}",
                                           "--out", "{tmp}/store"], ["{tmp}/ckpt/clara_config.json: line 1"]),
    "damaged checkpoint to serve": (["serve", "--checkpoint", "{tmp}/ckpt", "--store", "{tmp}/store"],
                                    ["{tmp}/ckpt/clara_config.json: line 1"]),
    "store to serve missing": (["serve", "--checkpoint", "{tmp}/config-only", "--store", "{tmp}/store"],
                               ["store {tmp}/store does not exist"]),
    "store to serve unpublished": (["serve", "--checkpoint", "{tmp}/config-only", "--store", "{tmp}"],
                                   ["{tmp}: no published store (missing CURRENT)"]),
    "stage before the previous one": (["train", "--stage", "instruct", "--config", "configs/train/cpu/instruct.yaml",
                                       "init_from={tmp}/none"], ["init_from {tmp}/none: no such model directory"]),
    "damaged previous stage": (["train", "--stage", "instruct", "--config", "configs/train/cpu/instruct.yaml",
                                "init_from={tmp}/ckpt"], ["{tmp}/ckpt/clara_config.json: line 1: invalid JSON"]),
    "override the previous stage refuses": (["train", "--stage", "instruct", "--config",
                                             "configs/train/cpu/instruct.yaml", "init_from={tmp}/config-only",
                                             "model.compression_rate=0"],
                                            ["{tmp}/config-only/clara_config.json (with overrides ['compression_rate'])"
                                             ": compression_rate"]),
    "bad model field of stage 1": (["train", "--stage", "compress_pretrain", "--config",
                                    "configs/train/cpu/compress_pretrain.yaml", "model.memory_center_training=mean"],
                                   ["model: memory_center_training: Input should be 'running' or 'batch'"]),
    "monitor file of one record": (["train", "--stage", "compress_pretrain", "--config",
                                    "configs/train/cpu/compress_pretrain.yaml", "monitor.path={tmp}/monitor-one.jsonl"],
                                   ["monitor.path {tmp}/monitor-one.jsonl: needs at least 2 records"]),
    "monitor file missing": (["train", "--stage", "compress_pretrain", "--config",
                              "configs/train/cpu/compress_pretrain.yaml", "monitor.path={tmp}/none.jsonl"],
                             ["monitor.path {tmp}/none.jsonl: no such file"]),
    "monitor path a directory": (["train", "--stage", "compress_pretrain", "--config",
                                  "configs/train/cpu/compress_pretrain.yaml", "monitor.path={tmp}/ckpt"],
                                 ["monitor.path {tmp}/ckpt: a directory, not a JSONL file"]),
    "monitor records of one document": (["train", "--stage", "compress_pretrain", "--config",
                                         "configs/train/cpu/compress_pretrain.yaml",
                                         "monitor.path={tmp}/monitor-same.jsonl"],
                                        ["monitor.path {tmp}/monitor-same.jsonl: the first 3 records share"]),
    "candidate store while the compressor trains": (["train", "--stage", "compress_pretrain", "--config",
                                                     "configs/train/cpu/compress_pretrain.yaml",
                                                     "speed.candidate_store={tmp}/store"],
                                                    ["configs/train/cpu/compress_pretrain.yaml",
                                                     "speed.candidate_store is set but stage compress_pretrain"]),
    "export of a run without checkpoints": (["export", "--stage", "compress_pretrain", "--config",
                                             "configs/train/cpu/compress_pretrain.yaml", "run.storage_path={tmp}"],
                                            ["{tmp}/cpu-compress-pretrain: no checkpoints there"]),
    "config not UTF-8": (["train", "--stage", "instruct", "--config", "{tmp}/utf16.yaml"],
                         ["{tmp}/utf16.yaml: line 1: not UTF-8 text (byte 0xff at column 1)"]),
}


def test_an_input_error_raised_in_a_ray_task_is_shown_by_its_first_line():
    from ray.exceptions import RayTaskError

    from clara_ray.store.errors import StoreError
    from pipelines.cli_step import one_line

    cause = StoreError("corpus.jsonl:7: not UTF-8 text (byte 0xe9 at column 26)\nFailed to read stream iteratively")
    wrapped = RayTaskError("ReadJsonlLines", "Traceback (most recent call last):\n  File ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, StoreError)  # what cli_step catches
    assert one_line(wrapped) == "corpus.jsonl:7: not UTF-8 text (byte 0xe9 at column 26)"
    assert one_line(StoreError("a\n  b")) == "a b"


@pytest.mark.parametrize("case", CASES)
def test_input_errors_exit_2_with_one_line_naming_file_and_field(case, bad_files):
    argv, expected = CASES[case]
    result = CliRunner().invoke(app, [a.format(tmp=bad_files) for a in argv])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in expected:
        assert part.format(tmp=bad_files) in lines[0], lines[0]


def test_an_evaluation_of_a_damaged_checkpoint_writes_nothing(bad_files):
    argv, _ = CASES["damaged checkpoint"]
    assert CliRunner().invoke(app, [a.format(tmp=bad_files) for a in argv]).exit_code == 2
    assert not (bad_files / "eval").exists()


def test_the_installed_command_reports_input_errors_without_traceback(bad_files):
    clara = Path(sys.executable).with_name("clara")
    done = subprocess.run([str(clara), "train", "--stage", "instruct", "--config", str(bad_files / "bad.yaml")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.startswith("error: ")


EMIT = ("from pipelines.cli_step import configure_logging; import logging; configure_logging(); "
        "logging.getLogger('clara_ray.store.job').info('ours at info'); "
        "logging.getLogger('clara_ray.cache').debug('ours at debug'); "
        "logging.getLogger('docling').info('theirs at info'); "
        "logging.getLogger('docling').warning('theirs at warning')")


@pytest.mark.parametrize("level, shown, hidden", [
    (None, ["ours at info", "theirs at warning"], ["ours at debug", "theirs at info"]),
    ("DEBUG", ["ours at info", "ours at debug", "theirs at warning"], ["theirs at info"]),
    ("WARNING", ["theirs at warning"], ["ours at info", "ours at debug"]),
])
def test_progress_messages_reach_the_user_at_info_and_third_parties_only_warn(level, shown, hidden):
    env = {k: v for k, v in os.environ.items() if k != LOG_LEVEL_ENV}
    if level:
        env[LOG_LEVEL_ENV] = level
    stderr = subprocess.run([sys.executable, "-c", EMIT], capture_output=True, text=True, env=env, cwd=REPO,
                            check=True).stderr
    assert all(m in stderr for m in shown) and not any(m in stderr for m in hidden), stderr


@pytest.mark.parametrize("options, level", [(["-v"], "DEBUG"), (["--log-level", "warning"], "WARNING")])
def test_clara_verbosity_options_set_the_level_for_the_step_and_what_it_starts(options, level, monkeypatch):
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    CliRunner().invoke(app, [*options, "bench", "--only", "nope"])
    assert os.environ[LOG_LEVEL_ENV] == level
    result = CliRunner().invoke(app, ["--log-level", "loud", "bench"])
    assert result.exit_code == 2 and "loud" in result.output
