"""Driver-side checks of a training stage, before any worker starts."""
from __future__ import annotations

import json
import logging

import pytest

from train_helpers import tiny_stage_config

from clara_ray.data.records import RecordError
from clara_ray.train.data import read_stage_dataset
from clara_ray.train.trainer import _check_model, _check_monitor, _check_windows


def _stage1(tmp_path, lines, placement):
    data = tmp_path / "windows.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cfg = tiny_stage_config("compress_pretrain", tmp_path, "w", overrides=[
        f"data.paths=[{data}]", f"model.window_positions={placement}"])
    return cfg, _check_model(cfg), read_stage_dataset(cfg.data.paths, cfg.stage)


def test_document_placement_over_windows_without_spans_warns_naming_the_file(ray_cluster, tmp_path, caplog):
    bare = {"data_type": "paraphrase", "answers": ["bees build combs"], "docs": ["bees build combs"]}
    caplog.set_level(logging.WARNING, logger="clara_ray.train.trainer")
    _check_windows(*_stage1(tmp_path, [bare] * 4, "own"))
    assert not caplog.records  # the reference layout reads no span
    _check_windows(*_stage1(tmp_path, [bare] * 4, "document"))
    assert len(caplog.records) == 1
    assert "no record of" in caplog.text and "windows.jsonl" in caplog.text
    caplog.clear()
    _check_windows(*_stage1(tmp_path, [bare, {**bare, "doc_span": [4, 16]}], "document"))
    assert not caplog.records


def test_a_held_out_window_longer_than_the_compressor_reads_fails_before_ray_naming_file_and_line(tmp_path):
    """The monitor's records are read by rank 0 only: unchecked on the driver, a bad span would fail
    the worker group `run.max_failures` times over."""
    window = {"data_type": "paraphrase", "answers": ["bees build combs"], "docs": ["bees build combs"]}
    held_out = tmp_path / "heldout.jsonl"
    held_out.write_text("".join(json.dumps(line) + "\n" for line in [
        {**window, "doc_span": [0, 16]}, {**window, "docs": ["wasps do not"], "doc_span": [16, 10**6]}]))
    cfg = tiny_stage_config("compress_pretrain", tmp_path, "w", overrides=[f"monitor.path={held_out}"])
    model = _check_model(cfg)
    with pytest.raises(RecordError, match=rf"heldout\.jsonl:2: doc_span \[16, 1000000\]: .*"
                                          rf"model\.doc_max_length={model.doc_max_length}\)$"):
        _check_monitor(cfg, model.doc_max_length)
    _check_monitor(cfg, None)  # an export in a bucket: the workers check it
