"""Run CLaRa and its baselines over evaluation questions; score every prediction.

Systems (all on the same questions, the same candidates and the same top-k):
- `clara`: the query reasoner ranks the compressed candidates, the generator answers from the
  top-k compressed documents;
- `text_rag`: the backbone reads the top-k documents as text (`adapter: null` = bare backbone,
  or a named adapter of the checkpoint), ranked by any retriever;
- `closed_book`: the bare backbone with no documents (same prompt, empty background).
Settings: `normal` answers from the retrieved top-k; `oracle` guarantees the gold documents are
among the k (they replace the lowest-ranked non-gold picks), isolating generation quality from
retrieval quality.
"""
from __future__ import annotations

import time
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_ray.evaluation.loaders import EvalQuestion
from clara_ray.evaluation.metrics import answer_scores, mean_scores, retrieval_scores
from clara_ray.evaluation.retrievers import ClaraRetriever, Retriever, build_retriever

Setting = Literal["normal", "oracle"]
CLOSED = "closed"  # the setting label of closed-book rows: no documents, so no normal/oracle


class SystemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["clara", "text_rag", "closed_book"]
    retriever: Literal["clara", "minilm", "bm25"] = "clara"
    adapter: str | None = None  # text_rag only: None = bare backbone


class HarnessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(5, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    settings: list[Setting] = Field(default_factory=lambda: ["normal", "oracle"])
    retrievers: list[Literal["clara", "minilm", "bm25"]] = Field(default_factory=lambda: ["clara", "minilm", "bm25"])
    systems: list[SystemSpec] = Field(default_factory=lambda: [
        SystemSpec(name="clara", kind="clara"),
        SystemSpec(name="text_rag", kind="text_rag", retriever="clara"),
        SystemSpec(name="closed_book", kind="closed_book"),
    ])
    ranked_to_keep: int = Field(10, ge=1)  # ranked candidate indices written per question

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"system names must be unique, got {names}")
        return self


def select_topk(ranked: Sequence[int], gold: Sequence[int], k: int, oracle: bool) -> list[int]:
    """Top-k of a ranking; in oracle mode the best-ranked gold documents (up to k) are always
    kept and the best-ranked others fill the remaining slots, in ranking order."""
    if not oracle:
        return list(ranked[:k])
    gold_set = set(gold)
    golds = ([i for i in ranked if i in gold_set] + [i for i in gold if i not in set(ranked)])[:k]
    fill = [i for i in ranked if i not in gold_set][: k - len(golds)]
    position = {doc: p for p, doc in enumerate(ranked)}
    return sorted(golds + fill, key=lambda doc: position.get(doc, len(ranked)))


class Evaluator:
    """Holds a loaded CLaRa and the retrievers; `evaluate` scores a batch of questions."""

    def __init__(self, model, config: HarnessConfig, minilm_path: str | None = None):
        self.model, self.config = model, config
        needed = set(config.retrievers) | {s.retriever for s in config.systems if s.kind != "closed_book"}
        if any(s.kind == "clara" for s in config.systems):
            needed.add("clara")  # its cache holds the compressed documents the generator reads
        # MiniLM runs beside the CLaRa model (on its GPU on a cluster)
        options = {"minilm": {"model_path": minilm_path, "device": str(model.device)}}
        self.retrievers: dict[str, Retriever] = {
            name: build_retriever(name, model=model, **options.get(name, {})) for name in sorted(needed)}

    def evaluate(self, questions: Sequence[EvalQuestion]) -> list[dict[str, Any]]:
        if not questions:
            return []
        if any(not q.docs for q in questions) and any(s.kind != "closed_book" for s in self.config.systems):
            bad = next(q.id for q in questions if not q.docs)
            raise ValueError(f"question {bad!r} has no candidate documents")
        texts, candidates = [q.question for q in questions], [q.docs for q in questions]
        rankings, seconds = {}, {}
        for name, retriever in self.retrievers.items():
            start = time.perf_counter()
            rankings[name] = retriever.rank(texts, candidates)
            seconds[name] = time.perf_counter() - start
        rows = [self._row_header(q, {n: r[i] for n, r in rankings.items()}) for i, q in enumerate(questions)]
        for system in self.config.systems:
            for setting in ([CLOSED] if system.kind == "closed_book" else self.config.settings):
                start = time.perf_counter()
                topk, answers = self._answer(system, setting, questions, rankings)
                elapsed = time.perf_counter() - start + seconds.get(system.retriever, 0.0) * (system.kind != "closed_book")
                for row, q, top, answer in zip(rows, questions, topk, answers):
                    row["systems"][f"{system.name}/{setting}"] = {
                        "prediction": answer, "topk": top, "latency_s": elapsed / len(questions),
                        **answer_scores(answer, q.answers)}
        return rows

    def _row_header(self, q: EvalQuestion, ranked: dict[str, list[int]]) -> dict[str, Any]:
        keep = self.config.ranked_to_keep
        return {
            "id": q.id, "dataset": q.dataset, "question": q.question, "answers": q.answers,
            "pos_index": q.pos_index, "num_candidates": len(q.docs),
            "retrieval": {name: {"ranked": r[:keep], **retrieval_scores(r, q.pos_index)} for name, r in ranked.items()},
            "systems": {},
        }

    def _answer(self, system: SystemSpec, setting: str, questions: Sequence[EvalQuestion],
                rankings: dict[str, list[list[int]]]) -> tuple[list[list[int]], list[str]]:
        model, new_tokens = self.model, self.config.max_new_tokens
        texts = [q.question for q in questions]
        if system.kind == "closed_book":
            return [[] for _ in questions], model.generate_from_text(texts, [[] for _ in questions], new_tokens, adapter=None)
        topk = [select_topk(ranked, q.pos_index, self.config.top_k, oracle=setting == "oracle")
                for ranked, q in zip(rankings[system.retriever], questions)]
        if system.kind == "text_rag":
            docs = [[q.docs[i] for i in top] for q, top in zip(questions, topk)]
            return topk, model.generate_from_text(texts, docs, new_tokens, adapter=system.adapter)
        return topk, model.generate_from_compressed_documents_and_questions(
            texts, self._compressed(questions, topk), new_tokens)

    def _compressed(self, questions: Sequence[EvalQuestion], topk: list[list[int]]):
        import torch

        clara: ClaraRetriever = self.retrievers["clara"]  # type: ignore[assignment]
        dtype = self.model.config.torch_dtype
        return [torch.from_numpy(clara.compressed([q.docs[i] for i in top])).to(self.model.device, dtype)
                for q, top in zip(questions, topk)]


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-system/setting mean acc, em, f1 and latency; per-retriever mean Recall/Precision@k."""
    systems = sorted({key for row in rows for key in row["systems"]})
    retrievers = sorted({key for row in rows for key in row["retrieval"]})
    generation = {}
    for key in systems:
        scored = [row["systems"][key] for row in rows if key in row["systems"]]
        means = mean_scores({m: s[m] for m in ("acc", "em", "f1", "latency_s")} for s in scored)
        generation[key] = {**means, "n": len(scored)}
    retrieval = {}
    for name in retrievers:
        scored = [{m: v for m, v in row["retrieval"][name].items() if m != "ranked"} for row in rows]
        retrieval[name] = {**mean_scores(scored), "n": sum(1 for s in scored if s)}
    return {"num_questions": len(rows), "generation": generation, "retrieval": retrieval}
