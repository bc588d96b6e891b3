"""One-off builds in the user cache: complete entries only, rebuilt otherwise, one build per node."""
import json
import logging
import subprocess
import sys

import pytest

from clara_ray import cache


def build_hf_dir(out):
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")


@pytest.fixture()
def entry(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RAY_CACHE", str(tmp_path / "cache"))
    return cache.cache_root() / "backbones" / "some-model"


def poison_as_a_nonzero_rank_did(target):
    """What the old code published when save_pretrained skipped a rank != 0: no config, no weights."""
    (target / "config.json").unlink()
    (target / "model.safetensors").unlink()
    (target / cache.MANIFEST).write_text(json.dumps({"name": target.name, "checksums": {}}))


def corrupt_weights(target):
    (target / "model.safetensors").write_bytes(b"corrupt")


def drop_config(target):
    (target / "config.json").unlink()


@pytest.mark.parametrize("damage", [poison_as_a_nonzero_rank_did, corrupt_weights, drop_config])
def test_incomplete_entry_is_rebuilt_with_a_warning(entry, damage, caplog):
    built = []

    def build(out):
        built.append(out)
        build_hf_dir(out)

    cache.ensure_built(entry, build)
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="clara_ray.cache"):
        assert cache.ensure_built(entry, build) == entry
    assert len(built) == 2 and cache.entry_problem(entry) is None
    assert (entry / "model.safetensors").read_bytes() == b"weights"
    assert f"cached {entry} is incomplete" in caplog.text


def test_a_build_that_writes_no_weights_fails_and_caches_nothing(entry):
    def tokenizer_only(out):  # save_pretrained on a rank != 0: the tokenizer saves, the model does not
        (out / "tokenizer.json").write_text("{}")
        (out / "config.json").write_text("{}")

    with pytest.raises(cache.CacheBuildError, match="records no weight file"):
        cache.ensure_built(entry, tokenizer_only)
    assert [p.name for p in entry.parent.iterdir() if p.suffix != ".lock"] == []


def test_an_incomplete_directory_outside_the_cache_is_left_alone(entry, tmp_path):
    mine = tmp_path / "users-own"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(cache.CacheBuildError, match="remove it or choose another directory"):
        cache.ensure_built(mine, build_hf_dir)
    assert (mine / "notes.txt").read_text() == "keep"


CONCURRENT_BUILDER = """
import sys, time
from pathlib import Path
from clara_ray.cache import ensure_built

target, log, started = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
(started / sys.argv[4]).touch()

def build(out):
    with log.open("a") as fh:
        fh.write("built\\n")
    deadline = time.monotonic() + 60
    while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # keep building until the other process is asking for the entry too
    time.sleep(0.5)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")

ensure_built(target, build)
"""


def test_concurrent_processes_wait_for_one_build(entry, tmp_path):
    log, started = tmp_path / "builds.log", tmp_path / "started"
    started.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_BUILDER, str(entry), str(log), str(started), str(i)])
             for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert log.read_text() == "built\n" and cache.entry_problem(entry) is None
