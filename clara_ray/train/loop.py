"""The per-worker training loop Ray Train runs on every rank.

DeepSpeed owns the optimizer, ZeRO partitioning, gradient accumulation, clipping, the lr
schedule and the checkpoint files; Ray Train owns the workers, the data shards, checkpoint
persistence and restarts. Every `checkpoint.every_steps` each rank writes its DeepSpeed shard and
reports it; the final checkpoint also holds the exported CLaRa directory (`model/`).
"""
from __future__ import annotations

import collections
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from clara_ray.config import ConfigError
from clara_ray.data.records import window_span
from clara_ray.train.config import TrainConfig
from clara_ray.train.data import micro_batches

EXPORT_SUBDIR = "model"
RECENTER_DOCUMENTS = 64  # the running mean memory's recomputation (recenter_memory): noise ~1/8 of a memory's own part
TAG_PREFIX = "step_"
# Each rank's random state beside the DeepSpeed state, so a resumed run draws the dropout masks and
# paraphrase prompts an uninterrupted one would have drawn.
_RNG_FILE = "rng_state_rank{rank}.pt"


def stage_model(cfg: TrainConfig, device: str):
    """The stage's CLaRa before its first step, adapters prepared for it. Stage 1: a fresh CLaRa from
    `cfg.model`; later stages: the previous stage's export."""
    from clara_ray import CLaRa, CLaRaConfig

    if cfg.init_from:
        model = CLaRa.from_pretrained(cfg.init_from, device=device, **(cfg.model or {}))
    else:
        model = CLaRa.from_config(CLaRaConfig(**cfg.model), device=device)
    model.prepare_stage(cfg.stage, generator_init=cfg.generator_init, train_compressor=cfg.train_compressor)
    return model


def build_model(cfg: TrainConfig, device: str):
    """stage_model with the stage's speed settings (cfg.speed) applied."""
    model = stage_model(cfg, device)
    model.label_logits_only = cfg.speed.label_logits_only
    model.encode_distinct = cfg.speed.encode_distinct
    if cfg.speed.candidate_cache and not model.trains("compressor"):  # a store is refused otherwise (TrainConfig)
        model.cache_candidates(stored_candidates(cfg.speed.candidate_store, model))
    return model


def stored_candidates(path: str | None, model):
    """The store's vectors for a frozen compressor, checked against it; None without a store."""
    if not path:
        return None
    from clara_ray.train.stored_candidates import StoredCandidates

    stored = StoredCandidates(path)
    stored.check_compressor(model)
    return stored


def enable_gradient_checkpointing(model) -> None:
    """Turn on activation checkpointing in the Hugging Face backbone inside `model`."""
    lm = model.language_model
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise ConfigError(f"deepspeed.gradient_checkpointing is set but {type(lm).__name__} does not support it")
    model.enable_activation_checkpointing()


def _skip_shm_allreduce(cfg: TrainConfig) -> None:
    # DeepSpeed's comm backend JIT-compiles a CPU shared-memory all-reduce the first time it starts
    # unless the op is marked incompatible; gloo does the job on CPU, so we mark it off.
    if cfg.resources.use_gpu or cfg.deepspeed.cpu_shm_allreduce:
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _restore(engine, model) -> int:
    """Load the last reported checkpoint into the engine and this rank's random state; returns the
    step to continue from."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        # Frozen backbone weights are not in the checkpoint (exclude_frozen_parameters), hence
        # non-strict; every trainable tensor and the optimizer/scheduler state are.
        _, client_state = engine.load_checkpoint(directory, load_module_strict=False)
        rng_file = Path(directory) / _RNG_FILE.format(rank=ray.train.get_context().get_world_rank())
        if rng_file.is_file():  # checkpoints from before it was saved continue with a fresh state
            _set_rng_state(model, rng_file)
    if client_state is None:
        raise RuntimeError(f"checkpoint {checkpoint.path} holds no DeepSpeed state")
    return int(client_state["step"])


def _save_rng_state(model, file: Path) -> None:
    import torch

    torch.save({"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "model": model._rng.getstate()}, file)


def _set_rng_state(model, file: Path) -> None:
    import torch

    state = torch.load(file, weights_only=False)  # our own file: tensors and random.Random's tuple
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    model._rng.setstate(state["model"])


def _save_and_report(engine, model, cfg: TrainConfig, step: int, metrics: dict[str, Any], final: bool) -> None:
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="clara-ckpt-") as directory:
        engine.save_checkpoint(directory, tag=f"{TAG_PREFIX}{step:08d}", client_state={"step": step},
                               exclude_frozen_parameters=True)
        rank = ray.train.get_context().get_world_rank()
        _save_rng_state(model, Path(directory) / _RNG_FILE.format(rank=rank))
        if final and rank == 0:
            model.mark_trained(cfg.stage)
            model.save_pretrained(Path(directory) / EXPORT_SUBDIR)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory))


class _StepStats:
    """A step's micro-batch losses (and stage-3 recall) summed, then averaged over all ranks."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.tokens = 0
        self.positions = 0

    def _add(self, name: str, value) -> None:
        if value is None:
            return
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def add(self, out) -> None:
        for name in ("loss", "ce", "mse"):
            value = getattr(out, name, None)
            self._add(name, value.detach() if hasattr(value, "detach") else value)
        for name, value in (getattr(out, "recall", None) or {}).items():
            self._add(name, value)
        self.tokens += out.num_tokens
        self.positions += out.num_positions

    def global_means(self) -> tuple[dict[str, float], int, int]:
        """(mean of every metric over all ranks' micro-batches, real tokens and computed
        positions over all ranks)."""
        import torch.distributed as dist

        mine = (self.sums, self.counts, self.tokens, self.positions)
        parts = [mine]
        if dist.is_initialized():
            # Objects, not a fixed-size tensor: recall@k exists only where a batch had gold indices.
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for part_sums, part_counts, _, _ in parts:
            for name, value in part_sums.items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + part_counts[name]
        return {name: sums[name] / counts[name] for name in sums}, sum(p[2] for p in parts), sum(p[3] for p in parts)


class MemoryMonitor:
    """Held-out CE with each record's own documents vs the next record's that differ (cfg.monitor):
    a generator that reads its memory does better with its own; one that ignores it scores both
    alike, however low its training loss."""

    def __init__(self, cfg: TrainConfig, doc_max_length: int | None = None):
        """`doc_max_length` also checks each held-out window's doc_span against the compressor's."""
        from clara_ray.data.records import read_records

        self.stage, self.every = cfg.stage, cfg.monitor.every_steps
        path = Path(cfg.monitor.path)
        if not path.is_file():
            problem = "a directory, not a JSONL file" if path.is_dir() else "no such file"
            raise ConfigError(f"monitor.path {path}: {problem}")
        self.records = read_records(path, cfg.stage, doc_max_length)[: cfg.monitor.records]
        if len(self.records) < 2:
            raise ConfigError(f"monitor.path {path}: needs at least 2 records to swap documents")
        n = len(self.records)
        others = [next((self.records[(i + k) % n].docs for k in range(1, n)
                        if self.records[(i + k) % n].docs != r.docs), None) for i, r in enumerate(self.records)]
        if any(d is None for d in others):
            raise ConfigError(f"monitor.path {path}: the first {n} records share their documents")
        self.swapped = [r.model_copy(update={"docs": d}) for r, d in zip(self.records, others)]

    def measure(self, model) -> dict[str, float]:
        import torch

        was_training, rng = model.training, model._rng
        model.eval()
        try:
            with torch.no_grad():
                own, other = (self._mean_ce(model, records) for records in (self.records, self.swapped))
                similarities = self._memory_similarities(model)
        finally:
            model.train(was_training)
            model._rng = rng
        return {"heldout_ce_own": own, "heldout_ce_other": other, "memory_gap": other - own, **similarities}

    def _memory_similarities(self, model) -> dict[str, float]:
        """Mean cosine between different documents' memories, as the compressor emits them
        (`memory_similarity`) and as the generator reads them (`read_similarity`, after
        memory_norm). Near 1, every document gives the generator the same input: a generic soft
        prompt, nothing left to read. Under memory_norm "centered" the first is near 1 anyway (the
        part all memories share is large); the second then says whether the centring removed it."""
        docs = list(dict.fromkeys(d for r in self.records for d in r.docs))
        states = model._frozen_compress(docs)
        read = model._generator_scale(states.reshape(-1, states.shape[-1])).reshape(states.shape)
        return {"memory_similarity": _mean_cosine(model.retrieval_vectors(states)),
                "read_similarity": _mean_cosine(model.retrieval_vectors(read))}

    def _mean_ce(self, model, records) -> float:
        import random

        model._rng = random.Random(0)  # the same paraphrase prompts for own and swapped documents
        return sum(float(model([r], self.stage).ce) for r in records) / len(records)


def _mean_cosine(flat) -> float:
    """Mean cosine between different rows of L2-normalised `flat`."""
    n = flat.shape[0]
    return float(((flat @ flat.T).sum() - n) / max(n * (n - 1), 1))


def _tensorboard(cfg: TrainConfig, start_step: int):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a crashed attempt logged beyond the checkpoint we resume from.
    return SummaryWriter(str(cfg.run.log_path / "tensorboard"), purge_step=start_step or None)


def _initialize(cfg: TrainConfig, total_steps: int):
    """The stage's model wrapped by DeepSpeed: (model, engine, lr scheduler, trainable params)."""
    import deepspeed
    import ray.train.torch

    from clara_ray.train.deepspeed_config import build_deepspeed_config, scheduler_factory

    _skip_shm_allreduce(cfg)
    model = build_model(cfg, str(ray.train.torch.get_device()))
    if cfg.deepspeed.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=trainable, config=build_deepspeed_config(cfg),
        lr_scheduler=scheduler_factory(cfg, total_steps),
    )
    return model, engine, scheduler, trainable


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry: one rank of the stage's training."""
    import ray.train
    import torch

    setup_began = time.perf_counter()
    cfg = TrainConfig.model_validate(loop_config["train_config"])
    total_steps: int = loop_config["total_steps"]
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(cfg.seed)
    model, engine, scheduler, trainable = _initialize(cfg, total_steps)
    start_step = _restore(engine, model)
    if rank == 0:
        print(f"[{cfg.stage}] rank 0 ready in {time.perf_counter() - setup_began:.1f}s: "
              f"{sum(p.numel() for p in trainable):,} trainable parameters, starting at step "
              f"{start_step}/{total_steps}", flush=True)
    accum = cfg.grad_accum_steps
    stream = micro_batches(ray.train.get_dataset_shard("train"), cfg.stage, cfg.batch.micro_size,
                           cfg.data.shuffle_buffer, cfg.seed, cfg.data.length_buckets, cfg.data.group_documents)
    # Resume where the data stream was: skip the micro-batches the restored steps consumed.
    stream = itertools.islice(stream, start_step * accum, None)

    writer = _tensorboard(cfg, start_step) if rank == 0 else None
    monitor = MemoryMonitor(cfg, model.config.doc_max_length) if rank == 0 and cfg.monitor.path else None
    # The documents of the last micro-batches: a compressor trained under the batch rule has its running
    # mean memory recomputed from them before the monitor reads it and before each checkpoint (after a
    # resume, from what the resumed run has seen; training itself does not read that mean).
    recent = collections.deque(maxlen=RECENTER_DOCUMENTS)
    engine.train()
    began = time.perf_counter()
    first_step_seconds = None  # includes the data stream's start-up, a one-off cost
    for step in range(start_step + 1, total_steps + 1):
        tick, stats = time.perf_counter(), _StepStats()
        lr = scheduler.get_last_lr()[0]
        for records in itertools.islice(stream, accum):
            recent.extend((d, window_span(r)) for r in records for d in r.docs)
            out = engine(records, cfg.stage)
            engine.backward(out.loss)
            engine.step()  # DeepSpeed only updates (and clips, steps the lr) every `accum` calls
            stats.add(out)
        seconds = time.perf_counter() - tick
        first_step_seconds = seconds if first_step_seconds is None else first_step_seconds
        due_log = step % cfg.run.log_every == 0 or step == total_steps
        due_ckpt = step % cfg.checkpoint.every_steps == 0 or step == total_steps
        if not (due_log or due_ckpt):
            continue
        means, tokens, positions = stats.global_means()
        metrics = {"step": step, "lr": lr, "samples_per_s": cfg.batch.global_size / seconds,
                   "tokens_per_s": tokens / seconds, "padding": 1 - tokens / max(positions, 1),
                   "resumed_from_step": start_step, **means}
        due_monitor = monitor is not None and (step % monitor.every == 0 or step == total_steps)
        # Before every checkpoint too, so that any checkpoint exports as the final one would
        # (`clara export`). `recent` is empty only if the data stream ran dry before this step.
        if model.memory_center_lags and recent and (due_monitor or due_ckpt):
            model.recenter_memory(recent)
        if due_monitor:
            metrics |= monitor.measure(model)
        if writer is not None:
            _log_progress(writer, metrics, total_steps)
        if due_ckpt:
            if step == total_steps:
                metrics["train_seconds"] = time.perf_counter() - began
                metrics["first_step_seconds"] = first_step_seconds
                if (stored := model.stored_candidates) is not None:  # misses were compressed here
                    metrics["candidates_from_store"] = stored.found / max(stored.found + stored.missed, 1)
            _save_and_report(engine, model, cfg, step, metrics, final=step == total_steps)
    if start_step >= total_steps and rank == 0:
        print(f"[{cfg.stage}] already at step {total_steps}/{total_steps}; nothing to train", flush=True)
    if writer is not None:
        writer.close()


def _log_progress(writer, metrics: dict[str, Any], total_steps: int) -> None:
    step = metrics["step"]
    keys = [k for k in metrics if k not in ("step", "resumed_from_step", "train_seconds", "first_step_seconds")]
    print(f"step {step}/{total_steps} " + " ".join(f"{k} {metrics[k]:.4g}" for k in keys), flush=True)
    for key in keys:
        writer.add_scalar(f"train/{key}", metrics[key], step)
