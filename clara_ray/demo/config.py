from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from clara_ray.resources import ShippedPath

STAGES = ("compress_pretrain", "instruct", "end_to_end")


class DemoConfig(BaseModel):
    # Inputs may name the files shipped with clara-ray (resolved also when installed, outside the repo).
    model_config = ConfigDict(extra="forbid", validate_default=True)
    documents: ShippedPath = Path("examples/documents")
    workdir: Path = Path("runs/demo")
    ingest_config: ShippedPath = Path("configs/ingest.yaml")
    ingest_overrides: list[str] = Field(default_factory=list)
    train_configs: dict[str, ShippedPath] = Field(default_factory=lambda: {
        s: Path(f"configs/train/cpu/{s}.yaml") for s in STAGES})
    extra_training_data: dict[str, list[ShippedPath]] = Field(default_factory=dict)
    serve_config: ShippedPath = Path("serve/config.yaml")
    serve_port: int = Field(8123, ge=1024, le=65535)
    questions: list[str] = Field(min_length=1)
    max_new_tokens: int = Field(32, ge=1, le=512)
    step_timeout_s: float = Field(1800, gt=0)
