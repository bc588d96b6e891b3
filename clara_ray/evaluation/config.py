"""`EvalConfig`: the typed config of `python -m pipelines.evaluate` (YAML + `a.b=c` overrides)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clara_ray.evaluation.harness import HarnessConfig
from clara_ray.evaluation.report import label_problem
from clara_ray.resources import ShippedPathStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    format: Literal["squad", "jsonl"]
    path: ShippedPathStr  # may name the bundled sample (examples/data/sample_squad.json)
    dataset: Optional[str] = Field(None, description="jsonl: dataset label (default: file stem)")
    # squad: article indices, or [start, stop) in article_range (train/eval splits are by article)
    articles: Optional[list[int]] = None
    article_range: Optional[tuple[int, int]] = None
    limit: Optional[int] = Field(None, gt=0, description="at most this many questions")
    per_article: Optional[int] = Field(None, gt=0, description="squad: at most this many questions per article")
    max_candidates: Optional[int] = Field(None, gt=0, description="keep gold + sampled others, e.g. 20")
    seed: int = 0

    @model_validator(mode="after")
    def _one_selection(self):
        if self.article_range is not None and self.articles is not None:
            raise ValueError("set articles or article_range, not both")
        return self

    @property
    def article_indices(self) -> Optional[list[int]]:
        return list(range(*self.article_range)) if self.article_range is not None else self.articles


class RayResources(_Strict):
    actors: int = Field(1, gt=0, description="model replicas (one per GPU on a cluster)")
    num_cpus: float = Field(1.0, gt=0, description="per actor; fractional on a 2-core machine")
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(4, gt=0, description="questions per model call")
    torch_threads: Optional[int] = Field(None, gt=0)


class EvalConfig(_Strict):
    checkpoint: str = Field(description="CLaRa directory written by save_pretrained / pipelines.train")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="CLaRaConfig fields, e.g. dtype")
    device: str = "cpu"
    # With a store, each question's candidates are the store's top `store_candidates` documents
    # for it (corpus-scale retrieval); without one, the candidates the data file gives.
    store: Optional[str] = Field(None, description="CompressedStore built by this checkpoint (pipelines.precompress)")
    store_candidates: int = Field(20, gt=0)
    minilm_path: Optional[str] = Field(None, description="sentence-transformers dir; default: bundled MiniLM")
    data: DataSpec
    harness: HarnessConfig = Field(default_factory=HarnessConfig)
    ray: RayResources = Field(default_factory=RayResources)
    output_dir: str = Field(description="predictions.jsonl, summary.json, report.md, plots")
    label: Optional[str] = Field(None, description="run name in reports (default: CR=<compression rate>)")

    @field_validator("label")
    @classmethod
    def _fits_a_table(cls, label: Optional[str]) -> Optional[str]:
        if label is not None and (problem := label_problem(label)):
            raise ValueError(f"the run name {problem}")
        return label
