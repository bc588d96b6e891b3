"""TrainConfig: the repo's stage YAMLs load, and inconsistent settings are refused up front."""
from __future__ import annotations

from pathlib import Path

import pytest

from clara_ray.config import ConfigError, load_config
from clara_ray.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
STAGES = ("compress_pretrain", "instruct", "end_to_end")


@pytest.mark.parametrize("profile", ["", "cpu"])
@pytest.mark.parametrize("stage", [*STAGES, "retrieval_warmup"])
def test_repo_configs_load_as_their_stage(profile, stage):
    cfg = load_config(TrainConfig, CONFIGS / profile / f"{stage}.yaml")
    assert cfg.stage == stage
    assert (cfg.init_from is None) == (stage == "compress_pretrain")
    assert cfg.batch.global_size == cfg.grad_accum_steps * cfg.batch.micro_size * cfg.resources.num_workers


def test_gpu_reference_hyperparameters_follow_the_spec():
    lr = {s: load_config(TrainConfig, CONFIGS / f"{s}.yaml") for s in STAGES}
    assert [lr[s].optim.lr for s in STAGES] == [1e-4, 1e-4, 5e-6]
    assert [lr[s].optim.schedule for s in STAGES] == ["cosine", "cosine", "constant"]
    assert [lr[s].batch.global_size for s in STAGES] == [128, 128, 32]
    assert lr["compress_pretrain"].model["max_length"] == 2048 and lr["end_to_end"].model["max_length"] == 1024
    for cfg in lr.values():
        assert (cfg.deepspeed.precision, cfg.deepspeed.zero_stage, cfg.deepspeed.gradient_checkpointing) == ("bf16", 2, True)
        # torch's AdamW, not DeepSpeed's FusedAdam: that one JIT-compiles with nvcc inside
        # deepspeed.initialize on every fresh node, and LoRA's few million weights gain nothing from it.
        assert cfg.resources.use_gpu and cfg.optim.torch_adam
        assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.grad_clip == 1.0 and cfg.optim.warmup_ratio == 0.03


def test_global_batch_must_split_over_workers_and_micro_batches():
    with pytest.raises(ConfigError, match="not a multiple"):
        load_config(TrainConfig, CONFIGS / "cpu" / "compress_pretrain.yaml", ["batch.global_size=6"])


def test_later_stages_need_the_previous_export():
    with pytest.raises(ConfigError, match="init_from"):
        load_config(TrainConfig, CONFIGS / "cpu" / "instruct.yaml", ["init_from=null"])


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(TrainConfig, CONFIGS / "cpu" / "instruct.yaml", ["optim.lrr=1"])


def test_total_steps_from_epochs_or_max_steps():
    cfg = load_config(TrainConfig, CONFIGS / "cpu" / "compress_pretrain.yaml", ["max_steps=null", "epochs=2"])
    assert cfg.total_steps(24) == 6  # 48 samples / global batch 8
    assert cfg.model_copy(update={"max_steps": 5}).total_steps(24) == 5
    with pytest.raises(ConfigError, match="less than one global batch"):
        cfg.total_steps(3)


def test_paths_resolve_on_the_driver_and_missing_init_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, CONFIGS / "cpu" / "instruct.yaml", ["init_from=prev/model"])
    with pytest.raises(ConfigError, match="prev/model: no such model directory"):
        cfg.with_absolute_paths()
    (tmp_path / "prev" / "model").mkdir(parents=True)
    resolved = cfg.with_absolute_paths()
    assert resolved.init_from == str(tmp_path / "prev" / "model")
    assert resolved.run.storage_path == str(tmp_path / "runs")
    assert resolved.run.export_dir == tmp_path / "runs" / "cpu-instruct" / "model"
    assert resolved.run.log_path == tmp_path / "runs" / "cpu-instruct"


def test_bucket_storage_needs_a_filesystem_export_and_logs_beside_it(tmp_path):
    with pytest.raises(ConfigError, match="run.output_dir"):
        load_config(TrainConfig, CONFIGS / "compress_pretrain.yaml", ["run.storage_path=s3://bucket/runs"])
    cfg = load_config(TrainConfig, CONFIGS / "compress_pretrain.yaml",
                      ["run.storage_path=s3://bucket/runs", f"run.output_dir={tmp_path}/models/s1"]).with_absolute_paths()
    assert cfg.run.storage_path == "s3://bucket/runs"
    assert cfg.run.export_dir == tmp_path / "models" / "s1"
    assert cfg.run.log_path == tmp_path / "models" / "s1-logs"


def test_an_s3_endpoint_gives_ray_train_a_filesystem_pointed_at_it(tmp_path):
    from pyarrow.fs import S3FileSystem

    base = ["run.storage_path=s3://bucket/runs", f"run.output_dir={tmp_path}/s1"]
    assert load_config(TrainConfig, CONFIGS / "compress_pretrain.yaml", base).run.storage() == ("s3://bucket/runs", None)
    cfg = load_config(TrainConfig, CONFIGS / "compress_pretrain.yaml", [*base, "run.storage_endpoint=http://127.0.0.1:9"])
    path, fs = cfg.run.storage()
    assert path == "bucket/runs" and isinstance(fs, S3FileSystem)
    with pytest.raises(ConfigError, match="storage_endpoint applies to an s3:// storage_path"):
        load_config(TrainConfig, CONFIGS / "compress_pretrain.yaml", ["run.storage_endpoint=http://127.0.0.1:9"])


def test_generator_init_is_a_stage2_option():
    cfg = load_config(TrainConfig, CONFIGS / "cpu" / "instruct.yaml", ["generator_init=previous"])
    assert cfg.generator_init == "previous"
    with pytest.raises(ConfigError, match="generator_init applies to the instruct stage only"):
        load_config(TrainConfig, CONFIGS / "cpu" / "end_to_end.yaml", ["generator_init=previous"])
