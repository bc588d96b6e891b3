"""Training throughput: the exact speed-ups (issue 22) and Ray Train + DeepSpeed's overhead.

    python -m bench.train_throughput [--part speedups|overhead|all] [--squad FILE]
        [--backbone smollm2-135m] [--steps 12] [--micro-batch 2]

`--part speedups` (bench/train_speedups.py): stage 1 and stage 3 with and without the
speed-ups, same records, same run. `--part overhead`, described below, compares the trainer
with a plain loop.

Same model, data (bundled stage-1 sample), global batch (2 x micro batch) and number of optimizer
steps in every arm, and the same micro batch per forward pass: the plain loop and 1 worker
accumulate gradients over 2 micro batches, 2 workers run one each. (Halving the micro batch
instead would mix a second effect into the 2-worker figure: on CPU a forward over fewer samples
costs more per sample.) Each arm's time covers its training steps only (model loading and Ray
start-up excluded).
The first step is reported apart: in the Ray arm it also starts the Ray Data stream, a one-off
cost; the per-sample comparison is over steps 2..N.
Targets (issue 3): Ray Train + DeepSpeed on 1 worker at most 15% slower per sample than the
plain loop; 2 workers at least 1.6x the samples/s of 1 where cores allow. What the cores allow
is measured too: two plain loops running at once, one per core.
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

from clara_ray.resources import shipped

DATA = shipped("examples/data/pretrain_data.jsonl")
CONFIG = shipped("configs/train/cpu/compress_pretrain.yaml")
ACCUMULATION = 2  # micro batches per optimizer step on one worker (the 2-worker arm: 1 each)


def _model_fields(backbone: str) -> dict:
    return {"backbone": backbone, "compression_rate": 16, "doc_max_length": 64, "dtype": "float32"}


def plain_loop_seconds(backbone: str, steps: int, micro_batch: int, threads: int) -> tuple[float, float]:
    """A bare PyTorch loop: AdamW on the trainable parameters, no Ray, no DeepSpeed; each step
    accumulates gradients over ACCUMULATION micro batches, as one DeepSpeed worker does.
    Returns (seconds for all steps, seconds for the first)."""
    import torch

    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.data.records import read_records

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CLaRa.from_config(CLaRaConfig(**_model_fields(backbone)), device="cpu")
    model.prepare_stage("compress_pretrain")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    records = itertools.cycle(read_records(DATA, "compress_pretrain"))
    model.train()
    began = first = time.perf_counter()
    for step in range(steps):
        for _ in range(ACCUMULATION):
            loss = model([next(records) for _ in range(micro_batch)], "compress_pretrain").loss
            (loss / ACCUMULATION).backward()  # DeepSpeed scales by its accumulation steps too
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            first = time.perf_counter() - began
    return time.perf_counter() - began, first


def steady_seconds_per_step(run: tuple[float, float], steps: int) -> float:
    """Mean step time over steps 2..N of a (all steps, first step) timing."""
    seconds, first = run
    return (seconds - first) / (steps - 1)


def two_plain_loops_at_once(backbone: str, steps: int, micro_batch: int) -> list[tuple[float, float]]:
    """Two independent plain loops running at the same time, one per core: what the machine
    allows two workers before any communication (shared memory bandwidth and caches, Ray's own
    processes aside)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return pool.starmap(plain_loop_seconds, [(backbone, steps, micro_batch, 1)] * 2)


def ray_seconds(backbone: str, steps: int, micro_batch: int, workers: int, storage: Path,
                zero_stage: int | None = None) -> tuple[float, float]:
    """Ray Train + DeepSpeed (the project's trainer, ZeRO stage from the CPU config unless given);
    the loop's own (all steps, first step) time."""
    import json

    from clara_ray.config import load_config
    from clara_ray.train.config import TrainConfig
    from clara_ray.train.trainer import train_stage

    cfg = load_config(TrainConfig, CONFIG, [
        f"model={json.dumps(_model_fields(backbone))}", f"data.paths=[{DATA}]",
        f"max_steps={steps}", f"checkpoint.every_steps={steps}", f"run.log_every={steps}",
        f"batch.global_size={micro_batch * ACCUMULATION}", f"batch.micro_size={micro_batch}",
        f"resources.num_workers={workers}", "data.shuffle_buffer=0",
        f"run.storage_path={storage}", f"run.name=bench-{workers}w",
        *([f"deepspeed.zero_stage={zero_stage}"] if zero_stage is not None else []),
    ])
    metrics = train_stage(cfg).final_metrics
    return float(metrics["train_seconds"]), float(metrics["first_step_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--micro-batch", type=int, default=2, help=f"samples per forward pass; "
                        f"global batch = {ACCUMULATION} x this in every arm")
    parser.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=None,
                        help="DeepSpeed ZeRO stage of the Ray arms (default: the CPU config's)")
    parser.add_argument("--part", choices=("speedups", "overhead", "all"), default="all")
    parser.add_argument("--squad", type=Path, default=None,
                        help="SQuAD JSON for the speed-up arms (default: the bundled sample; SQuAD's length mix "
                             "is what the targets are about)")
    parser.add_argument("--speedup-steps", type=int, default=8, help="stage-1 optimizer steps per speed-up arm")
    parser.add_argument("--speedup-questions", type=int, default=16, help="stage-3 questions per speed-up arm (0: stage 1 only)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is reported apart)")
    for name, value in (("HF_HUB_OFFLINE", "1"), ("RAY_AUTH_MODE", "disabled"), ("DS_ACCELERATOR", "cpu"),
                        ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)
    if args.part in ("speedups", "all"):
        from bench import train_speedups

        train_speedups.main(args.squad, args.speedup_steps, args.speedup_questions, doc_max_length=256, threads=2)
    if args.part in ("overhead", "all"):
        overhead(args)


def overhead(args) -> None:
    import ray

    global_batch = args.micro_batch * ACCUMULATION
    samples = args.steps * global_batch
    # One thread for the plain loop: a Ray Train worker with 1 CPU runs torch on one thread too.
    plain = plain_loop_seconds(args.backbone, args.steps, args.micro_batch, threads=1)
    pair = two_plain_loops_at_once(args.backbone, args.steps, args.micro_batch)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="clara-bench-") as storage:
            one = ray_seconds(args.backbone, args.steps, args.micro_batch, 1, Path(storage), args.zero_stage)
            two = ray_seconds(args.backbone, args.steps, args.micro_batch, 2, Path(storage), args.zero_stage)
    finally:
        ray.shutdown()
    print(f"\ntrain throughput: {args.backbone}, {args.steps} steps x global batch {global_batch} "
          f"(micro batch {args.micro_batch}), "
          f"{os.cpu_count()} CPUs, ZeRO stage {'of the CPU config' if args.zero_stage is None else args.zero_stage}")
    arms = (("plain PyTorch loop (1 thread)", plain), ("Ray Train + DeepSpeed, 1 worker", one),
            ("Ray Train + DeepSpeed, 2 workers", two))
    for label, (seconds, first) in arms:
        steady = steady_seconds_per_step((seconds, first), args.steps)
        print(f"  {label:34s} all steps {seconds:7.2f}s ({samples / seconds:5.2f} samples/s) | first step {first:5.2f}s"
              f" | steps 2..{args.steps}: {global_batch / steady:5.2f} samples/s")
    plain_s, one_s, two_s = (steady_seconds_per_step(run, args.steps) for _, run in arms)
    print(f"  overhead of Ray+DeepSpeed (1 worker) vs plain, per sample, steps 2..N: {one_s / plain_s - 1:+.1%} "
          f"(target <= +15%); all steps: {one[0] / plain[0] - 1:+.1%}")
    print(f"  2 workers vs 1, samples/s, steps 2..N: {one_s / two_s:.2f}x (target >= 1.6x where cores allow); "
          f"all steps: {one[0] / two[0]:.2f}x")
    ceiling = sum(plain_s / steady_seconds_per_step(run, args.steps) for run in pair)
    print(f"  where cores allow: two plain loops at once, one per core, reach {ceiling:.2f}x one loop's samples/s, "
          f"so 2 workers get {one_s / two_s / ceiling:.0%} of what this machine allows")


if __name__ == "__main__":
    main()
