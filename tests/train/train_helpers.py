"""Tiny-model stage configs (2 Ray Train workers, ZeRO-2, CPU/gloo), shared by the trainer tests and
the multi-node tests."""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "data"
STAGE_DATA = {"compress_pretrain": "pretrain_data.jsonl", "instruct": "instruction_data.jsonl",
              "end_to_end": "end_to_end_data.jsonl"}
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
