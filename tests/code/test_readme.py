"""The README as a new user follows it: every command of "Your own documents in five commands"
parses against the real CLI and its step's config, reads only what the repository ships or an
earlier command writes, and the requests it sends match the served routes; every repository path
and link in the README and docs/ exists, and none points outside the repository; no committed
result (docs/results) names a path of the machine that wrote it.

Running the walkthrough itself takes minutes (ingest synthesis, three Ray Train stages): the demo
(tests/demo) and tests/cluster/test_job_specs_run.py run that chain."""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import typer
from typer.testing import CliRunner

from clara_ray.config import load_config
from clara_ray.ingest import outputs as ingest_outputs
from pipelines.cli import app
from tests.code.cli_commands import clara_commands, path_args

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
DOCS = sorted((REPO / "docs").glob("*.md"))
WALKTHROUGH = "## Your own documents in five commands"
# Pages announced in the README's docs index that another issue's branch adds (24: multi-node faults,
# 25: operations); drop a name here once its page is in the repository.
PENDING_PAGES = {"docs/reliability.md"}
TOP_LEVEL = ("bench/", "clara_ray/", "cluster/", "configs/", "docs/", "examples/", "experiments/", "pipelines/",
             "serve/", "tests/")


def section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def walkthrough() -> list[list[str]]:
    return [argv for block in code_blocks(section(README, WALKTHROUGH), "bash") for argv in clara_commands(block)]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def overrides(argv: list[str]) -> list[str]:
    return [a for a in argv[2:] if "=" in a and not a.startswith("-")]


def reads(argv: list[str]) -> list[str]:
    """The relative paths a command reads: every path argument but the `--out` it writes."""
    out = argv.index("--out") if "--out" in argv else len(argv)
    return path_args(argv[:out] + argv[out + 2:])


def writes(argv: list[str]) -> list[Path]:
    """What a walkthrough command leaves for the next ones, from the step's own config and code."""
    from clara_ray.ingest.config import IngestConfig
    from clara_ray.store.job import PrecompressConfig
    from clara_ray.train.config import TrainConfig
    from pipelines.serve import DEFAULT_CONFIG, load_serve_config

    step = argv[1]
    if step == "ingest":
        load_config(IngestConfig, option(argv, "--config") if "--config" in argv else None,
                    [*overrides(argv), f"input={option(argv, '--input')}", f"out={option(argv, '--out')}"])
        out = Path(option(argv, "--out"))
        return [out / name for name in (ingest_outputs.PRETRAIN, ingest_outputs.INSTRUCT,
                                        ingest_outputs.END_TO_END, ingest_outputs.RAW)]
    if step == "train":
        config = load_config(TrainConfig, option(argv, "--config"), overrides(argv))
        assert config.stage == option(argv, "--stage"), shlex.join(argv)
        return [config.run.export_dir]
    if step == "precompress":
        load_config(PrecompressConfig, option(argv, "--config") if "--config" in argv else None, overrides(argv))
        return [Path(option(argv, "--out"))]
    if step == "serve":
        load_serve_config(Path(option(argv, "--config")) if "--config" in argv else DEFAULT_CONFIG,
                          [f"checkpoint={option(argv, '--checkpoint')}", f"store={option(argv, '--store')}",
                           *overrides(argv)])
        return []
    if step == "add":  # adds to the store precompress wrote
        assert any(Path(option(argv, "--store")) == Path(option(c, "--out")) for c in walkthrough()
                   if c[1] == "precompress"), shlex.join(argv)
        return []
    raise AssertionError(f"the walkthrough runs `clara {step}`, which this test does not know how to check")


def test_the_walkthrough_is_ingest_train_x3_precompress_serve_add():
    commands = walkthrough()
    assert [argv[1] for argv in commands] == ["ingest", "train", "train", "train", "precompress", "serve", "add"], \
        commands
    assert [option(argv, "--stage") for argv in commands if argv[1] == "train"] == [
        "compress_pretrain", "instruct", "end_to_end"]


@pytest.mark.parametrize("argv", walkthrough(), ids=lambda argv: " ".join(argv[1:3]))
def test_a_walkthrough_command_parses_against_the_cli(argv):
    help_ = CliRunner().invoke(app, [argv[1], "--help"])
    assert help_.exit_code == 0, help_.output
    group = typer.main.get_command(app)
    command = group.get_command(group.make_context("clara", [argv[1], "--help"], resilient_parsing=True), argv[1])
    command.make_context(argv[1], argv[2:])  # unknown options, missing required ones, bad values raise here


def test_each_walkthrough_command_reads_what_the_repository_ships_or_an_earlier_one_writes(monkeypatch):
    monkeypatch.chdir(REPO)  # the README's commands run from the repository
    written: list[Path] = []
    for argv in walkthrough():
        for path in reads(argv):
            if path.startswith(TOP_LEVEL):
                assert (REPO / path).exists(), f"`{shlex.join(argv)}` names {path}, which is not in the repository"
            else:
                assert any(Path(path).resolve() == w.resolve() for w in written), \
                    f"`{shlex.join(argv)}` reads {path}, which no earlier command writes ({[str(w) for w in written]})"
        written += writes(argv)


def test_the_requests_match_the_served_routes_and_model_name():
    from serve.app import api
    from serve.settings import ServeSettings

    routes = set(api.openapi()["paths"])  # the ingress's routes (Serve moves them into a sub-router)
    port = [argv for argv in walkthrough() if argv[1] == "serve"][0]
    serve_port = int(option(port, "--port")) if "--port" in port else 8000
    walk = section(README, WALKTHROUGH)
    urls = re.findall(r"http://[\w.]+:\d+[\w/]*", walk)
    assert urls
    for url in map(urlparse, urls):
        assert url.port == serve_port, url.geturl()
        assert url.path in ("", "/") or url.path.rstrip("/") in routes or url.path.rstrip("/") == "/v1", url.geturl()
    for block in code_blocks(walk, "python"):
        tree = ast.parse(block)  # the client snippet at least compiles
        models = [k.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                  for k in node.keywords if k.arg == "model"]
        assert models == [ServeSettings.model_fields["model_name"].default], models
    assert "/v1/chat/completions" in routes and "/v1/rag" in routes


def _links(path: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", path.read_text()) if "://" not in t]


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_repository_path_exists(page):
    missing = []
    for target in _links(page):
        resolved = (page.parent / target).resolve()
        if not resolved.exists() and str(resolved.relative_to(REPO)) not in PENDING_PAGES:
            missing.append(target)
    for path in re.findall(r"`((?:%s)[\w./-]*)`" % "|".join(map(re.escape, TOP_LEVEL)), page.read_text()):
        if "..." not in path and not (REPO / path).exists():  # `configs/...` stands for any file there
            missing.append(path)
    assert not missing, f"{page.relative_to(REPO)} names what is not in the repository: {missing}"


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_points_outside_the_repository(page):
    text = page.read_text()
    outside = re.findall(r"\.\./[\w.-]+|\bSPEC(?:\.md)?\b|PLATFORM-NOTES|/work/\w+", text)
    assert not outside, f"{page.relative_to(REPO)} refers to files a user does not have: {outside}"


RESULTS = sorted(p for p in (REPO / "docs" / "results").rglob("*") if p.suffix in (".md", ".json"))


@pytest.mark.parametrize("page", RESULTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_committed_result_names_a_machine_path(page):
    # reports and run records are rebuilt on other machines: paths in them are relative to the repository
    absolute = re.findall(r"(?<![\w.])/(?:work|home|tmp|root|Users|mnt)/[^\s`\"]*", page.read_text())
    assert not absolute, f"{page.relative_to(REPO)} names paths of the machine that wrote it: {absolute[:3]}"


def test_the_readme_is_a_first_page():
    assert len(README.splitlines()) <= 200
