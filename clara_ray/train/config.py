"""The typed config of one training stage (`python -m pipelines.train --config <yaml>`).

One schema serves the GPU reference profile and the small CPU profile: the device, precision,
ZeRO stage and optimizer flavour are fields, never branches in the training code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_ray.config import ConfigError
from clara_ray.data.records import Stage, trained_adapters
from clara_ray.resources import ShippedPathStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    paths: list[ShippedPathStr] = Field(min_length=1,
                                        description="JSONL files (or directories of them) in the stage's format")
    shuffle_buffer: int = Field(0, ge=0, description="local shuffle buffer per worker, 0 = file order")
    # Length bucketing: each run of `length_buckets` micro-batches is formed from records sorted
    # by length (then the micro-batches are shuffled), so a forward pass pads little. 0 = every
    # micro-batch in stream order, padded to its longest record (the reference behaviour).
    length_buckets: int = Field(0, ge=0, description="micro-batches sorted by length together; 0 = off")
    # Document groups: records that list the same documents (stage 1: a paragraph's reconstruction
    # and QA records) go into the same micro-batch, where the model compresses their document once
    # (speed.encode_distinct). The local shuffle then moves whole groups (within windows of
    # max(shuffle_buffer, micro_size x length_buckets) records) instead of records, and length
    # buckets sort by document size. A micro-batch then holds fewer distinct documents than
    # records, so it is not the reference's stream: opt-in.
    group_documents: bool = False


class OptimConfig(_Strict):
    lr: float = Field(gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    # GPU: DeepSpeed's fused Adam kernel; CPU: torch's AdamW (avoids compiling an extension).
    torch_adam: bool = False


class BatchConfig(_Strict):
    global_size: int = Field(gt=0, description="samples per optimizer step over all workers")
    micro_size: int = Field(gt=0, description="samples per forward pass on one worker")


class ResourcesConfig(_Strict):
    num_workers: int = Field(1, gt=0, description="one Ray Train worker per GPU (or per CPU slot)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    # Placement of the workers' placement group: SPREAD / STRICT_SPREAD put them on different
    # nodes, so one lost node takes one worker, not the whole group.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class DeepSpeedConfig(_Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    backend: Literal["nccl", "gloo"] = "gloo"
    # DeepSpeed's CPU shared-memory all-reduce is JIT-compiled on first use (~2 min); gloo is
    # fast enough for CPU runs, so it stays off unless asked for.
    cpu_shm_allreduce: bool = False
    extra: dict[str, Any] = Field(default_factory=dict, description="merged into the generated DeepSpeed JSON")


class MonitorConfig(_Strict):
    """Is memory read? Every `every_steps`, rank 0 scores held-out records of the stage twice,
    with their own documents and with the next record's, and logs both CEs and their gap."""
    path: Optional[str] = Field(None, description="held-out JSONL of this stage; None = off")
    every_steps: int = Field(25, gt=0)
    records: int = Field(16, ge=2)


class CheckpointConfig(_Strict):
    every_steps: int = Field(100, gt=0)
    keep: int = Field(2, gt=0, description="checkpoints kept by Ray Train")


class RunConfig(_Strict):
    name: str = Field(min_length=1, description="same name + storage_path = resume")
    storage_path: str = Field("runs", description="Ray Train storage: a local/NFS path or s3://, gs://")
    output_dir: Optional[str] = Field(None, description="exported CLaRa dir; default <storage>/<name>/model")
    log_dir: Optional[str] = Field(None, description="TensorBoard + summary.json; default <storage>/<name>, "
                                                     "or <output_dir>-logs with bucket storage")
    # An S3-compatible service other than AWS for an s3:// storage_path (MinIO, Ceph, a test server),
    # e.g. http://minio.internal:9000; credentials come from the usual AWS variables or node roles.
    storage_endpoint: Optional[str] = Field(None, description="endpoint URL of the s3:// storage; None = AWS")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts after a failure (-1 = forever)")
    log_every: int = Field(1, gt=0)

    @property
    def remote_storage(self) -> bool:
        return "://" in self.storage_path

    @model_validator(mode="after")
    def _endpoint_needs_s3(self):
        if self.storage_endpoint and not self.storage_path.startswith("s3://"):
            raise ValueError(f"run.storage_endpoint applies to an s3:// storage_path, not {self.storage_path}")
        return self

    @model_validator(mode="after")
    def _local_outputs(self):
        # The export and the logs are written with plain file I/O (atomic renames), so with
        # bucket storage they need a filesystem path of their own (e.g. an NFS mount).
        if self.remote_storage and not self.output_dir:
            raise ValueError(f"storage_path {self.storage_path} is remote: set run.output_dir to a shared "
                             "filesystem path for the exported model")
        return self

    def _local(self, explicit: Optional[str], default_leaf: str | None) -> Path:
        if explicit:
            return Path(explicit).expanduser().resolve()
        base = Path(self.storage_path).expanduser().resolve() / self.name
        return base / default_leaf if default_leaf else base

    def storage(self) -> tuple[str, Any]:
        """Ray Train's (storage_path, storage_filesystem): with an endpoint, a pyarrow S3 filesystem
        pointed at it and the path without its scheme, as Ray Train takes them; else the path alone."""
        if not self.storage_endpoint:
            return self.storage_path, None
        from pyarrow.fs import S3FileSystem

        return self.storage_path.removeprefix("s3://"), S3FileSystem(endpoint_override=self.storage_endpoint)

    @property
    def log_path(self) -> Path:
        if self.remote_storage and not self.log_dir:
            return self._local(f"{self.output_dir}-logs", None)
        return self._local(self.log_dir, None)

    @property
    def export_dir(self) -> Path:
        return self._local(self.output_dir, "model")

    @property
    def checkpoint_dir(self) -> Path:
        """Where Ray Train keeps the run's checkpoints, for a local or mounted storage_path."""
        return self._local(None, None)


class SpeedConfig(_Strict):
    """Exact speed-ups (results unchanged); off reproduces the reference's cost, for benchmarks."""
    # Stages whose compressor is frozen (retrieval warm-up, end-to-end, stage 2 with
    # train_compressor=false) compress each candidate
    # once and reuse its vectors instead of recompressing it for every question that lists it.
    candidate_cache: bool = True
    # Those stages read candidates' vectors from this store instead (`pipelines.precompress` of
    # their documents with the checkpoint whose compressor they keep frozen; checked on a sample
    # at start). Stored in fp16: losses move by ~1e-3, so not bit-exact. Needs candidate_cache.
    candidate_store: Optional[str] = None
    # The generator's vocabulary projection only where a label is predicted.
    label_logits_only: bool = True
    # A document listed by several records of a micro-batch is compressed once (most useful with
    # data.group_documents, which puts a paragraph's reconstruction and QA records together).
    encode_distinct: bool = True


class TrainConfig(_Strict):
    stage: Stage
    data: DataConfig
    # Stage 1 builds a fresh model from `model` (CLaRaConfig fields); stages 2-3 start from the
    # previous stage's exported directory in `init_from`, where `model` overrides saved fields
    # (e.g. dtype, or the backbone's path on this cluster).
    model: Optional[dict[str, Any]] = None
    init_from: Optional[str] = None
    # Stage 2 only: "reset" re-initialises the generator (the reference); "previous" keeps the
    # one stage 1 trained, which has already learned to read memory tokens.
    generator_init: Literal["reset", "previous"] = "reset"
    # Stage 2 only: false keeps stage 1's compressor frozen (a miniature-recipe deviation: the
    # reference trains it); each document is then compressed once, not once per question.
    train_compressor: bool = True
    optim: OptimConfig
    batch: BatchConfig
    epochs: float = Field(1.0, gt=0)
    max_steps: Optional[int] = Field(None, gt=0, description="overrides epochs when set")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    run: RunConfig
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if self.stage == "compress_pretrain":
            if self.model is None and self.init_from is None:
                raise ValueError("compress_pretrain needs `model` (CLaRaConfig fields) or `init_from`")
        elif self.init_from is None:
            raise ValueError(f"{self.stage} starts from the previous stage: set init_from=<exported model dir>")
        if self.generator_init != "reset" and self.stage != "instruct":
            raise ValueError(f"generator_init applies to the instruct stage only, not {self.stage}")
        if not self.train_compressor and self.stage != "instruct":
            raise ValueError(f"train_compressor=false applies to the instruct stage only, not {self.stage}")
        if self.speed.candidate_store and (self.trains_compressor or not self.speed.candidate_cache):
            raise ValueError(f"speed.candidate_store is set but stage {self.stage} trains the compressor (or "
                             "speed.candidate_cache is off): its candidates cannot come from a store")
        per_step = self.batch.micro_size * self.resources.num_workers
        if self.batch.global_size % per_step:
            raise ValueError(
                f"batch.global_size {self.batch.global_size} is not a multiple of "
                f"micro_size {self.batch.micro_size} x num_workers {self.resources.num_workers}"
            )
        return self

    def with_absolute_paths(self) -> "TrainConfig":
        """Paths resolved against the driver's directory: Ray workers run elsewhere."""
        def absolute(path: str | None) -> str | None:
            return path if path is None or "://" in path else str(Path(path).expanduser().resolve())

        if self.init_from and "://" not in self.init_from and not Path(self.init_from).expanduser().is_dir():
            raise ConfigError(f"init_from {self.init_from}: no such model directory (run the previous stage first)")
        run = self.run.model_copy(update={"storage_path": absolute(self.run.storage_path),
                                          "output_dir": absolute(self.run.output_dir),
                                          "log_dir": absolute(self.run.log_dir)})
        monitor = self.monitor.model_copy(update={"path": absolute(self.monitor.path)})
        return self.model_copy(update={"init_from": absolute(self.init_from), "run": run, "monitor": monitor})

    @property
    def trains_compressor(self) -> bool:
        return "compressor" in trained_adapters(self.stage, self.train_compressor)

    @property
    def grad_accum_steps(self) -> int:
        return self.batch.global_size // (self.batch.micro_size * self.resources.num_workers)

    def total_steps(self, num_records: int) -> int:
        """Optimizer steps for the run: `max_steps`, else `epochs` passes over the data."""
        if self.max_steps is not None:
            return self.max_steps
        steps = int(num_records * self.epochs) // self.batch.global_size
        if steps == 0:
            raise ConfigError(
                f"{num_records} records x {self.epochs} epochs is less than one global batch of "
                f"{self.batch.global_size}: lower batch.global_size or set max_steps"
            )
        return steps
