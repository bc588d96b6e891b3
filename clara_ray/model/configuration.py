"""CLaRaConfig: everything that defines a CLaRa model besides its weights."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_ray.config import ConfigError, InputError, validate_config
from clara_ray.parsing import ParseError, parse_json, read_text

ADAPTERS = ("compressor", "query_reasoner", "generator")
CONFIG_FILE = "clara_config.json"  # in every checkpoint directory, beside the weights
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(InputError):
    """A directory given as a CLaRa checkpoint that is not one, or one whose files are damaged;
    the message names the file."""


def weights_mismatch(exc: RuntimeError) -> str:
    """The last line of torch's load_state_dict error, which lists each tensor of another shape on a line."""
    return str(exc).strip().splitlines()[-1].strip()


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # "all-linear" = every Linear in the blocks, never lm_head (peft's own rule), so the
    # same default works for Llama, Mistral, Qwen2 and Gemma module names.
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class CLaRaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = "smollm2-135m"
    compression_rate: int = Field(32, ge=1, le=256)
    doc_max_length: int = Field(256, ge=1)
    generation_top_k: int = Field(5, ge=1)
    # Generator sequence cap in training (prompt with memory slots + target); the target is cut
    # to fit. Reference: 2048 for stages 1-2, 1024 for stage 3.
    max_length: int = Field(2048, ge=16)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    topk_temperature: float = Field(0.02, gt=0)
    mse_weight: float = Field(0.1, ge=0)
    # How memory vectors enter the generator. "none" (the reference): as the compressor's last
    # layer emits them, ~15x the norm of any token embedding on SmolLM2. "embedding": each
    # vector rescaled to the backbone's median token-embedding norm, so a small generator
    # receives inputs of the scale it was trained on (a miniature-recipe deviation; the stored
    # and retrieved vectors are unchanged, only the generator's input is rescaled). "centered":
    # first minus the running mean memory (per slot, kept like batch norm's statistics), then
    # rescaled: a component shared by every document can then not serve as a generic soft
    # prompt, which on SmolLM2 made the compressor collapse to one memory for all documents
    # (docs/results/squad-mini).
    memory_norm: Literal["none", "embedding", "centered"] = "none"
    memory_center_momentum: float = Field(0.95, ge=0.0, lt=1.0)
    # What "centered" subtracts while the compressor trains. "running": the running mean, as at
    # inference. It lags the memories' mean, and a compressor that keeps moving that mean one way
    # gets a shared offset past the centring anyway (on SmolLM2 at CR 4 8-12x the size of what
    # tells documents apart: a generic soft prompt again; docs/results/squad-mini, session 38).
    # "batch": batch norm's own rule, the batch's mean with its gradient, so no shared part can
    # reach the generator while it trains; inference still subtracts the running mean.
    memory_center_training: Literal["running", "batch"] = "running"
    # Where a stage-1 window (a record with `doc_span`) is compressed. "own": as a document of its own, right
    # before the memory tokens (the reference; a whole document is always read this way). The memory then
    # learns to keep the tokens just before it, which on a whole paragraph are its end (docs/results/squad-mini,
    # session 41). "document": at the positions it has in its paragraph, the memory tokens after the
    # paragraph's end, so windows teach the memory every distance in a document.
    window_positions: Literal["own", "document"] = "own"
    # Where the memory tokens sit among a document's tokens when it is compressed. "end" (the reference):
    # all n after the text. Each then learns to keep the tokens just before it, and trained on stage-1
    # windows of a few dozen tokens the memory of a whole paragraph keeps its end (session 42).
    # "interleaved": memory token j right after the first (j+1)/n of the text (rounded up), so under causal
    # attention it reads the text up to there: every part of a document, of any length, has memory
    # tokens right after it, as every part of a training window had (a miniature-recipe deviation).
    memory_layout: Literal["end", "interleaved"] = "end"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str = "sdpa"
    memory_token_template: str = "<MEM{i}>"
    encoder_token: str = "<ENC>"
    separator_token: str = "<SEP>"
    # adapter -> stage that last trained it; an adapter missing here was never trained.
    trained: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_rate(self):
        if self.doc_max_length < self.compression_rate:
            raise ValueError(
                f"doc_max_length ({self.doc_max_length}) must be >= compression_rate ({self.compression_rate})"
            )
        return self

    @model_validator(mode="after")
    def _check_layout(self):
        if self.memory_layout == "interleaved" and self.window_positions == "document":
            raise ValueError("memory_layout 'interleaved' places a window's memory tokens among its own tokens; "
                             "window_positions 'document' needs them after the whole document: choose one")
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "CLaRaConfig":
        """The config a checkpoint directory was saved with, `overrides` laid over it (no weights read)."""
        config_file = Path(path) / CONFIG_FILE
        if not config_file.is_file():
            raise CheckpointError(f"{path} is not a CLaRa checkpoint (no {CONFIG_FILE})")
        try:
            saved = parse_json(read_text(config_file))
        except (OSError, ParseError) as exc:
            raise CheckpointError(f"{config_file}: {exc}") from None
        if not isinstance(saved, dict):
            raise CheckpointError(f"{config_file}: top level must be a JSON object, got {type(saved).__name__}")
        source = f"{config_file} (with overrides {sorted(overrides)})" if overrides else str(config_file)
        try:
            return validate_config(cls, {**saved, **overrides}, source)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None

    @property
    def num_memory_tokens(self) -> int:
        return self.doc_max_length // self.compression_rate

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def memory_tokens(self) -> list[str]:
        return [self.memory_token_template.format(i=i) for i in range(self.num_memory_tokens)]
