"""The demo's steps: each one the same `python -m pipelines.<step>` a user submits with
`ray job submit`, with outputs under one work directory so the next step finds them."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from clara_ray.demo.config import STAGES, DemoConfig


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]

    @property
    def entrypoint(self) -> str:
        return shlex.join(self.argv)


def data_dir(cfg: DemoConfig) -> Path:
    return cfg.workdir.resolve() / "data"


def model_dir(cfg: DemoConfig, stage: str) -> Path:
    return cfg.workdir.resolve() / "runs" / stage / "model"


def store_dir(cfg: DemoConfig) -> Path:
    return cfg.workdir.resolve() / "store"


STAGE_FILES = {"compress_pretrain": "pretrain_data.jsonl", "instruct": "instruction_data.jsonl",
               "end_to_end": "end_to_end_data.jsonl"}


def pipeline_steps(cfg: DemoConfig) -> list[Step]:
    py = ["python", "-m"]
    steps = [Step("ingest", [*py, "pipelines.ingest", "--input", str(cfg.documents.resolve()),
                             "--out", str(data_dir(cfg)), "--config", str(cfg.ingest_config.resolve()),
                             *cfg.ingest_overrides])]
    previous = None
    for stage in STAGES:
        paths = [str(data_dir(cfg) / STAGE_FILES[stage]), *(str(p.resolve()) for p in cfg.extra_training_data.get(stage, []))]
        overrides = [f"data.paths=[{','.join(paths)}]", f"run.storage_path={cfg.workdir.resolve() / 'runs'}",
                     f"run.name={stage}"]
        if previous:
            overrides.append(f"init_from={model_dir(cfg, previous)}")
        steps.append(Step(f"train-{stage}", [*py, "pipelines.train", "--stage", stage,
                                             "--config", str(cfg.train_configs[stage].resolve()), *overrides]))
        previous = stage
    steps.append(Step("precompress", [*py, "pipelines.precompress", "--checkpoint", str(model_dir(cfg, "end_to_end")),
                                      "--corpus", str(data_dir(cfg) / "raw_knowledge.jsonl"), "--out", str(store_dir(cfg))]))
    return steps


def serve_step(cfg: DemoConfig) -> Step:
    return Step("serve", ["python", "-m", "pipelines.serve", "--checkpoint", str(model_dir(cfg, "end_to_end")),
                          "--store", str(store_dir(cfg)), "--config", str(cfg.serve_config.resolve()),
                          "--port", str(cfg.serve_port)])


def serve_again(cfg: DemoConfig) -> str:
    """The command that serves what the demo built once the demo has stopped its cluster."""
    return shlex.join(["clara", "serve", "--checkpoint", str(model_dir(cfg, "end_to_end")),
                       "--store", str(store_dir(cfg))])
