"""write_atomic and replace_dir: a reader sees the old file (directory) or the new one, never a
half-written one."""
import os

import pytest

from clara_ray.atomic import replace_dir, write_atomic


def test_writes_text_as_utf8_and_bytes_as_given(tmp_path):
    target = tmp_path / "nested" / "summary.json"  # parents are created
    write_atomic(target, "café\n")
    assert target.read_bytes() == "café\n".encode("utf-8")
    write_atomic(target, b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "CURRENT"
    write_atomic(target, "v000001\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "v000002\n")
    assert target.read_text() == "v000001\n"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]


def _fill(files: dict[str, str]):
    def fill(directory):
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
    return fill


def test_a_directory_is_replaced_whole(tmp_path):
    target = tmp_path / "model"
    replace_dir(target, _fill({"config.json": "old", "stale.bin": "x"}))
    replace_dir(target, _fill({"config.json": "new"}))
    assert {p.name: p.read_text() for p in target.iterdir()} == {"config.json": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_fill_keeps_the_old_directory_and_leaves_no_staging(tmp_path):
    target = tmp_path / "model"
    replace_dir(target, _fill({"config.json": "old"}))

    def half_written(directory):
        _fill({"config.json": "new"})(directory)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        replace_dir(target, half_written)
    assert (target / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
