"""Driver side of a training stage: data, Ray Train's TorchTrainer, export and summary.

`train_stage(cfg)` works against whatever Ray cluster the process is attached to (`ray job
submit` sets RAY_ADDRESS) and starts a local one otherwise. Running it again with the same
`run.name` and `run.storage_path` resumes from the last reported checkpoint (Ray Train V2).
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from clara_ray.atomic import replace_dir, write_atomic
from clara_ray.train.config import TrainConfig
from clara_ray.train.data import count_windows, read_stage_dataset
from clara_ray.train.loop import EXPORT_SUBDIR, MemoryMonitor, train_worker

if TYPE_CHECKING:
    from clara_ray.model.configuration import CLaRaConfig

log = logging.getLogger(__name__)


class TrainSummary(BaseModel):
    stage: str
    run_dir: str
    model_dir: str
    records: int
    total_steps: int
    resumed_from_step: int
    final_metrics: dict[str, Any]
    wall_seconds: float

    def describe(self) -> str:
        m = self.final_metrics
        keys = ["loss", "ce", "mse", *sorted(k for k in m if k.startswith("recall")), "samples_per_s", "tokens_per_s"]
        parts = [f"{k}={m[k]:.4g}" for k in keys if k in m]
        resumed = f" (resumed from step {self.resumed_from_step})" if self.resumed_from_step else ""
        return (f"[{self.stage}] {self.total_steps} steps on {self.records} records{resumed} in "
                f"{self.wall_seconds:.1f}s; final {' '.join(parts)}\n"
                f"  model: {self.model_dir}\n  run:   {self.run_dir} (TensorBoard: {self.run_dir}/tensorboard)")


def _export(checkpoint, target: Path) -> None:
    """Copy the checkpoint's CLaRa directory to `target`, replacing any previous export whole."""
    with checkpoint.as_directory() as directory:
        source = Path(directory) / EXPORT_SUBDIR
        if not source.is_dir():
            raise RuntimeError(f"final checkpoint {checkpoint.path} holds no exported model")
        replace_dir(target, lambda new: shutil.copytree(source, new))


def _trainer(cfg: TrainConfig, dataset, total_steps: int):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = cfg.resources
    storage_path, storage_filesystem = cfg.run.storage()
    return TorchTrainer(
        train_worker,
        train_loop_config={"train_config": cfg.model_dump(mode="json"), "total_steps": total_steps},
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker},
                                     placement_strategy=res.placement_strategy),
        torch_config=TorchConfig(backend=cfg.deepspeed.backend),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
        ),
        datasets={"train": dataset},
    )


def _fit(trainer):
    """`trainer.fit()`; when every failed worker stopped on an input error (a damaged checkpoint, a
    monitor file too short), that error itself, so the CLI prints its one line, not Ray's report."""
    from ray.train import WorkerGroupError

    from clara_ray.config import InputError

    try:
        return trainer.fit()
    except WorkerGroupError as exc:
        failures = list(exc.worker_failures.values())
        if failures and all(isinstance(f, InputError) for f in failures):
            raise failures[0] from exc
        raise


def _check_model(cfg: TrainConfig) -> "CLaRaConfig | None":
    """The model the stage starts from, read before Ray starts: stage 1's `model` fields, or the
    previous stage's export with `model` overrides laid over its config. A bad field or a damaged
    export is then one error naming it, not a worker group that fails and restarts
    `run.max_failures` times. (An export at a bucket path is read by the workers only: None.)"""
    from clara_ray.config import validate_config
    from clara_ray.model.configuration import CLaRaConfig

    if cfg.init_from is None:
        return validate_config(CLaRaConfig, cfg.model, "model")
    if "://" not in cfg.init_from:
        return CLaRaConfig.from_pretrained(cfg.init_from, **(cfg.model or {}))
    return None


def _check_windows(cfg: TrainConfig, model: "CLaRaConfig | None", dataset) -> None:
    """model.window_positions=document places windows by their `doc_span`; a file of windows
    without one (built before spans existed, or by hand) would silently train the reference layout."""
    if model is not None and model.window_positions == "document" and count_windows(dataset) == 0:
        log.warning("model.window_positions=document, but no record of %s has a doc_span: every document is "
                    "compressed as one of its own (build windows with pipelines.build_squad_data "
                    "--reconstruction-window)", ", ".join(cfg.data.paths))


def _check_monitor(cfg: TrainConfig, doc_max_length: int | None) -> None:
    """The monitor's held-out records, read as rank 0 will read them, so that a file too short,
    without two distinct documents or with a window longer than the compressor reads is one error
    before Ray starts, not a failed worker group."""
    if cfg.monitor.path:
        MemoryMonitor(cfg, doc_max_length)


def train_stage(cfg: TrainConfig) -> TrainSummary:
    import ray

    began = time.perf_counter()
    cfg = cfg.with_absolute_paths()
    model = _check_model(cfg)
    doc_max_length = model.doc_max_length if model else None
    _check_monitor(cfg, doc_max_length)
    if not ray.is_initialized():
        ray.init()  # joins RAY_ADDRESS (set by `ray job submit`), else starts a local cluster
    dataset = read_stage_dataset(cfg.data.paths, cfg.stage, doc_max_length)
    _check_windows(cfg, model, dataset)
    records = dataset.count()
    total_steps = cfg.total_steps(records)
    result = _fit(_trainer(cfg, dataset, total_steps))
    if result.checkpoint is None:
        raise RuntimeError(f"run {cfg.run.log_path} finished without a checkpoint")
    _export(result.checkpoint, cfg.run.export_dir)
    metrics = dict(result.metrics or {})
    summary = TrainSummary(
        stage=cfg.stage, run_dir=str(cfg.run.log_path), model_dir=str(cfg.run.export_dir), records=records,
        total_steps=total_steps, resumed_from_step=int(metrics.get("resumed_from_step", 0)),
        final_metrics=metrics, wall_seconds=time.perf_counter() - began,
    )
    write_atomic(cfg.run.log_path / "summary.json", summary.model_dump_json(indent=1))
    return summary
