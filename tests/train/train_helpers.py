"""Tiny-model stage configs (2 Ray Train workers, ZeRO-2, CPU/gloo), shared by the trainer tests and
the multi-node tests."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "data"
STAGE_DATA = {"compress_pretrain": "pretrain_data.jsonl", "instruct": "instruction_data.jsonl",
              "end_to_end": "end_to_end_data.jsonl"}
# The batch rule (memory_center_training "batch"), at an lr that moves the compressor in two steps.
CENTERED = ["model.memory_norm=centered", "model.memory_center_training=batch", "optim.lr=1e-2",
            "optim.schedule=constant", "optim.warmup_ratio=0", "batch.micro_size=2"]
TINY_MODEL = {"backbone": "tiny-random", "compression_rate": 8, "doc_max_length": 32, "dtype": "float32",
              "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}


def tiny_stage_config(stage: str, storage: Path, name: str, init_from: Path | None = None,
                      overrides: list[str] = ()):
    """The stage's CPU-profile YAML, switched to the tiny backbone and a 2-step run."""
    from clara_ray.config import load_config
    from clara_ray.train.config import TrainConfig

    start = [f"init_from={init_from}", "model=null"] if init_from else [f"model={json.dumps(TINY_MODEL)}"]
    return load_config(TrainConfig, REPO / "configs" / "train" / "cpu" / f"{stage}.yaml", [
        *start, f"data.paths=[{SAMPLE / STAGE_DATA[stage]}]", f"run.storage_path={storage}", f"run.name={name}",
        "batch.global_size=4", "batch.micro_size=1", "max_steps=2", "checkpoint.every_steps=1", *overrides,
    ])


def center_distances(model) -> tuple[float, float]:
    """How far `model`'s running mean memory is from the mean memory, under its weights, of the
    nearest set of 1-4 sample documents (what a rank recomputes it from), and from the mean of all of them."""
    docs = sorted({d for line in (SAMPLE / STAGE_DATA["compress_pretrain"]).open() for d in json.loads(line)["docs"]})
    memories = model.compress_documents(docs).float()
    nearest = min(float((memories[list(s)].mean(0) - model.memory_center).norm())
                  for k in range(1, 5) for s in itertools.combinations(range(len(docs)), k))
    return nearest, float((memories.mean(0) - model.memory_center).norm())
