"""Typed config of the ingest stage (`configs/ingest.yaml`).

API settings fall back to the environment (and an optional `.env` file) the way the seed
project did: OPENAI_BASE_URL, OPENAI_API_KEY, CLARA_TEXT_MODEL, CLARA_VISION_MODEL.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_ray.ingest.images import DEFAULT_MAX_PIXELS

# How far to run: extraction only, through captions (+ chunks, raw_knowledge), or everything.
Until = Literal["extract", "caption", "synthesize"]
UNTIL_ORDER: tuple[str, ...] = ("extract", "caption", "synthesize")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiConfig(_Strict):
    """An OpenAI-compatible endpoint; empty fields come from the environment / `.env`."""
    base_url: Optional[str] = None
    api_key: Optional[str] = None
    text_model: Optional[str] = None
    vision_model: Optional[str] = None
    env_file: Optional[str] = ".env"
    timeout_s: float = Field(60.0, gt=0)
    # Transport retries (429, 5xx, timeouts, connection errors): exponential backoff + jitter.
    max_attempts: int = Field(6, ge=1)
    initial_backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)
    # Whole-request retries when the reply is not the JSON we asked for (after repair).
    json_attempts: int = Field(3, ge=1)
    # Total request rate across all workers of one stage.
    requests_per_second: float = Field(4.0, gt=0)
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    temperature: float = 0.2
    max_tokens: int = Field(1024, ge=16)
    # With no endpoint configured anywhere, start the bundled SmolLM2 server on 127.0.0.1.
    embedded_fallback: bool = True
    embedded_backbone: str = "smollm2-135m"

    def resolved(self) -> "ApiConfig":
        """Fill empty fields from the environment, then from `env_file` if it exists."""
        file_values: dict[str, str] = {}
        if self.env_file and Path(self.env_file).is_file():
            from dotenv import dotenv_values

            file_values = {k: v for k, v in dotenv_values(self.env_file).items() if v}

        def pick(current: Optional[str], *names: str) -> Optional[str]:
            if current:
                return current
            for name in names:
                value = os.environ.get(name) or file_values.get(name)
                if value:
                    return value
            return None

        base_url = pick(self.base_url, "OPENAI_BASE_URL", "OPENAI_API_BASE")
        text_model = pick(self.text_model, "CLARA_TEXT_MODEL", "OPENAI_MODEL", "MODEL")
        return self.model_copy(update=dict(
            base_url=base_url,
            api_key=pick(self.api_key, "OPENAI_API_KEY") or ("not-needed" if base_url else None),
            text_model=text_model,
            vision_model=pick(self.vision_model, "CLARA_VISION_MODEL", "VISION_MODEL") or text_model,
        ))


class ExtractConfig(_Strict):
    # A directory of docling layout-model artifacts enables the full PDF pipeline (headings,
    # tables, reading order); without it PDFs go through the model-free native pipeline.
    pdf_artifacts_path: Optional[str] = None
    max_pages: Optional[int] = Field(None, ge=1)
    # docling-parse threads per worker; parallelism comes from the Ray workers, so keep it low.
    pdf_parser_threads: int = Field(1, ge=1)
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)
    max_image_side: int = Field(2048, ge=16)
    # No picture is decoded at more pixels than this (default: Pillow's decompression-bomb limit).
    # JPEG (and JPEG 2000) pictures over it are decoded at a reduced size; others are reported as
    # image_too_large.
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    min_image_side: int = Field(8, ge=1)
    jpeg_quality: int = Field(90, ge=10, le=100)


class CaptionConfig(_Strict):
    # Off: images get no caption and leave no trace in the text (no vision model available).
    enabled: bool = True
    prompt: str = ("Describe this image for a reader who cannot see it: what it shows, any text, "
                   "numbers or labels in it. Answer in at most three sentences.")
    max_tokens: int = Field(256, ge=16)
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.25, gt=0)


class ChunkConfig(_Strict):
    """Chunks of at most `max_tokens` tokens of `tokenizer`: the model's document window.

    tokenizer: the training config's model.backbone (a backbone name or a Hugging Face model dir);
    max_tokens: its model.doc_max_length (the compressor drops the tokens past it)."""
    tokenizer: str = "smollm2-135m"
    max_tokens: int = Field(96, ge=8)


class SynthesisConfig(_Strict):
    min_qa: int = Field(3, ge=2)
    max_qa: int = Field(5, ge=2)
    # First language is the main one; more languages ask for extra questions in them.
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    # Questions in a second language about the (first-language) passage, answered in the first.
    cross_lingual: bool = False
    verify_rounds: int = Field(3, ge=0)
    # Length bounds sent in the reply schema. A schema-enforcing server stops each string there,
    # which bounds the reply's token count; replies are still accepted up to QAPair's hard limits.
    summary_max_chars: int = Field(800, ge=10, le=800)
    question_max_chars: int = Field(200, ge=3, le=200)
    answer_max_chars: int = Field(200, ge=1, le=200)
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.25, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.max_qa < self.min_qa:
            raise ValueError(f"max_qa ({self.max_qa}) must be >= min_qa ({self.min_qa})")
        return self


class NegativesConfig(_Strict):
    method: Literal["minilm", "random"] = "minilm"
    instruct_docs: int = Field(5, ge=1)
    end_to_end_docs: int = Field(10, ge=1)
    seed: int = 0
    embed_batch_size: int = Field(64, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)


class IngestConfig(_Strict):
    input: Optional[str] = None
    out: Optional[str] = None
    until: Until = "synthesize"
    ray_address: Optional[str] = None
    # Retries of an item whose worker process died (OOM killer, crash) before it is reported as
    # worker_died; exceptions are never retried (they become error lines at once).
    worker_retries: int = Field(2, ge=0)
    progress: bool = True
    api: ApiConfig = Field(default_factory=ApiConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)

    def runs(self, stage: str) -> bool:
        """Whether `stage` is within the selected range (`until`)."""
        return UNTIL_ORDER.index(stage) <= UNTIL_ORDER.index(self.until)
