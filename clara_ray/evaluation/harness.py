"""Run CLaRa and its baselines over evaluation questions; score every prediction.

Systems (all on the same questions, the same candidates and the same top-k):
- `clara`: the query reasoner ranks the compressed candidates, the generator answers from the
  top-k compressed documents;
- `text_rag`: the backbone reads the top-k documents as text (`adapter: null` = bare backbone,
  or a named adapter of the checkpoint), ranked by any retriever;
- `closed_book`: the bare backbone with no documents (same prompt, empty background).
Settings: `normal` answers from the retrieved top-k; `oracle` guarantees the gold documents are
among the k (they replace the lowest-ranked non-gold picks), isolating generation quality from
retrieval quality; `wrong_memory` is the oracle top-k with each gold document replaced, in place,
by a foreign one (another article's), so the documents cannot hold the answer: a generator that
reads its memory scores clearly lower there than in `oracle`. The rest of that top-k is still the
question's own article, which sometimes holds the answer too; `foreign_memory` replaces all k
documents by foreign ones, a floor for reading memory (closed book has no memory at all).

Diagnostic `answer_loss`: the teacher-forced CE of each question's first gold answer given the
oracle top-k compressed documents (own) and given the wrong_memory ones (other), ranked by the
(first) `clara` system's retriever; a run without a `clara` system measures nothing.
"""
from __future__ import annotations

import time
from typing import Any, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_ray.config import InputError
from clara_ray.evaluation.loaders import EvalQuestion
from clara_ray.evaluation.metrics import answer_scores, mean_scores, paired_difference, retrieval_scores
from clara_ray.evaluation.positions import answer_position, by_answer_position
from clara_ray.evaluation.retrievers import ClaraRetriever, Retriever, build_retriever

Setting = Literal["normal", "oracle", "wrong_memory", "foreign_memory"]
CLOSED = "closed"  # the setting label of closed-book rows: no documents, so no normal/oracle
WRONG = "wrong_memory"
FOREIGN = "foreign_memory"
SWAPPED = (WRONG, FOREIGN)  # settings whose top-k holds foreign documents


class SystemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["clara", "text_rag", "closed_book"]
    retriever: Literal["clara", "minilm", "bm25"] = "clara"
    adapter: str | None = None  # text_rag only: None = bare backbone
    settings: Optional[list[Setting]] = None  # None: the harness's settings


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
    answer_loss: bool = Field(False, description="per question: answer CE with own vs wrong memory (clara system)")
    reconstruction: int = Field(0, ge=0, description="held-out gold paragraphs to reconstruct (stage 1's task)")

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"system names must be unique, got {names}")
        return self

    def settings_of(self, system: SystemSpec) -> list[str]:
        if system.kind == "closed_book":
            return [CLOSED]
        return system.settings if system.settings is not None else list(self.settings)

    @property
    def answer_loss_system(self) -> SystemSpec | None:
        """The CLaRa system whose memories the answer-loss diagnostic measures, if it runs."""
        return next((s for s in self.systems if s.kind == "clara"), None) if self.answer_loss else None

    @property
    def needed_retrievers(self) -> set[str]:
        """The retrievers scored or used by a system; `clara` also whenever a CLaRa system answers
        (its cache holds the compressed documents the generator reads)."""
        needed = set(self.retrievers) | {s.retriever for s in self.systems if s.kind != "closed_book"}
        return needed | ({"clara"} if any(s.kind == "clara" for s in self.systems) else set())

    @property
    def reads_memory(self) -> bool:
        """Whether anything evaluated depends on the checkpoint's compressed documents (and so on
        its compression rate): a CLaRa system, the query reasoner ranking them, reconstruction."""
        return "clara" in self.needed_retrievers or bool(self.reconstruction)

    @property
    def needs_foreign_docs(self) -> bool:
        return self.answer_loss_system is not None or any(
            setting in SWAPPED for s in self.systems for setting in self.settings_of(s))

    @property
    def foreign_docs_needed(self) -> int:
        """The least foreign documents per question: k with foreign_memory, else 0 (one per gold document)."""
        return self.top_k if any(FOREIGN in self.settings_of(s) for s in self.systems) else 0

    def foreign_docs_for(self, q: EvalQuestion) -> int:
        """The foreign documents question `q` needs: one per gold document in its top-k
        (wrong_memory, answer_loss), at least foreign_docs_needed (foreign_memory)."""
        return max(min(len(set(q.pos_index)), self.top_k), self.foreign_docs_needed)


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


def check_foreign_docs(q: EvalQuestion, needed: int) -> list[str]:
    """The question's foreign documents that are not among its candidates (a store's
    candidates may include one); an error naming the question if it has fewer than `needed`
    or no gold document to replace."""
    if not q.pos_index:
        raise InputError(f"question {q.id!r} has no gold document (pos_index) for the wrong_memory / foreign_memory "
                         "settings or the answer_loss diagnostic to replace")
    candidates = set(q.docs)
    foreign = [d for d in q.foreign_docs if d not in candidates]
    if len(foreign) < needed:
        raise InputError(f"question {q.id!r} has {len(foreign)} foreign document(s) (not among its candidates) "
                         f"but needs {needed}: wrong_memory and answer_loss one per gold document, foreign_memory "
                         "top_k (the loader takes them from other SQuAD articles or other JSONL questions' gold documents)")
    return foreign


def memory_docs(q: EvalQuestion, top: Sequence[int], setting: str) -> tuple[list[str], list[int]]:
    """The texts of a top-k and the positions that hold a foreign document: in wrong_memory each
    gold document is replaced in place (same k, same order) by one of the question's foreign ones,
    in foreign_memory every document (the first k foreign ones)."""
    docs = [q.docs[i] for i in top]
    if setting == FOREIGN:
        return check_foreign_docs(q, len(top))[:len(top)], list(range(len(top)))
    if setting != WRONG:
        return docs, []
    gold = set(q.pos_index)
    at = [p for p, i in enumerate(top) if i in gold]
    for p, text in zip(at, check_foreign_docs(q, max(len(at), 1))):
        docs[p] = text
    return docs, at


class Evaluator:
    """Holds a loaded CLaRa and the retrievers; `evaluate` scores a batch of questions."""

    def __init__(self, model, config: HarnessConfig, minilm_path: str | None = None):
        self.model, self.config = model, config
        needed = config.needed_retrievers
        # MiniLM runs beside the CLaRa model (on its GPU on a cluster)
        options = {"minilm": {"model_path": minilm_path, "device": str(model.device)}}
        self.retrievers: dict[str, Retriever] = {
            name: build_retriever(name, model=model, **options.get(name, {})) for name in sorted(needed)}

    def evaluate(self, questions: Sequence[EvalQuestion]) -> list[dict[str, Any]]:
        if not questions:
            return []
        if any(not q.docs for q in questions) and any(s.kind != "closed_book" for s in self.config.systems):
            bad = next(q.id for q in questions if not q.docs)
            raise InputError(f"question {bad!r} has no candidate documents")
        texts, candidates = [q.question for q in questions], [q.docs for q in questions]
        rankings, seconds = {}, {}
        for name, retriever in self.retrievers.items():
            start = time.perf_counter()
            rankings[name] = retriever.rank(texts, candidates)
            seconds[name] = time.perf_counter() - start
        rows = [self._row_header(q, {n: r[i] for n, r in rankings.items()}) for i, q in enumerate(questions)]
        for system in self.config.systems:
            for setting in self.config.settings_of(system):
                start = time.perf_counter()
                topk, foreign_at, answers = self._answer(system, setting, questions, rankings)
                retrieval_s = seconds.get(system.retriever, 0.0) if system.kind != "closed_book" else 0.0
                elapsed = time.perf_counter() - start + retrieval_s
                for row, q, top, at, answer in zip(rows, questions, topk, foreign_at, answers):
                    row["systems"][f"{system.name}/{setting}"] = {
                        "prediction": answer, "topk": top, "latency_s": elapsed / len(questions),
                        **({"foreign_at": at} if setting in SWAPPED else {}), **answer_scores(answer, q.answers)}
        if (measured := self.config.answer_loss_system) is not None:
            for row, ce in zip(rows, self.answer_ce(questions, rankings[measured.retriever])):
                row["diagnostics"] = ce
        return rows

    def answer_ce(self, questions: Sequence[EvalQuestion], ranked: Sequence[Sequence[int]]) -> list[dict[str, float]]:
        """Teacher-forced CE (nats per answer token) of each first gold answer given the oracle
        top-k of `ranked` (own memory) and the same top-k with its gold swapped (other memory)."""
        tops = [select_topk(r, q.pos_index, self.config.top_k, oracle=True) for r, q in zip(ranked, questions)]
        texts, answers = [q.question for q in questions], [q.answers[0] for q in questions]
        ce = {}
        for name, setting in (("answer_ce_own", "oracle"), ("answer_ce_other", WRONG)):
            docs = [memory_docs(q, top, setting)[0] for q, top in zip(questions, tops)]
            ce[name] = self.model.answer_ce_from_compressed(texts, self._compressed(docs), answers)
        return [{name: values[i] for name, values in ce.items()} for i in range(len(questions))]

    def _row_header(self, q: EvalQuestion, ranked: dict[str, list[int]]) -> dict[str, Any]:
        keep = self.config.ranked_to_keep
        return {
            "id": q.id, "dataset": q.dataset, "question": q.question, "answers": q.answers,
            "pos_index": q.pos_index, "num_candidates": len(q.docs),
            "retrieval": {name: {"ranked": r[:keep], **retrieval_scores(r, q.pos_index)} for name, r in ranked.items()},
            "systems": {},
            # where the answer sits in its gold document (report: scores by answer position)
            **answer_position(q),
        }

    def _answer(self, system: SystemSpec, setting: str, questions: Sequence[EvalQuestion],
                rankings: dict[str, list[list[int]]]) -> tuple[list[list[int]], list[list[int]], list[str]]:
        """Top-k candidate indices, positions holding a foreign document, and answers."""
        model, new_tokens = self.model, self.config.max_new_tokens
        texts = [q.question for q in questions]
        none = [[] for _ in questions]
        if system.kind == "closed_book":
            return none, none, model.generate_from_text(texts, none, new_tokens, adapter=None)
        topk = [select_topk(ranked, q.pos_index, self.config.top_k, oracle=setting in ("oracle", *SWAPPED))
                for ranked, q in zip(rankings[system.retriever], questions)]
        docs, foreign_at = map(list, zip(*(memory_docs(q, top, setting) for q, top in zip(questions, topk))))
        if system.kind == "text_rag":
            return topk, foreign_at, model.generate_from_text(texts, docs, new_tokens, adapter=system.adapter)
        return topk, foreign_at, model.generate_from_compressed_documents_and_questions(
            texts, self._compressed(docs), new_tokens)

    def _compressed(self, docs: Sequence[Sequence[str]]):
        """Each question's documents as (k, n, hidden) memory states, from the CLaRa retriever's cache."""
        import torch

        clara: ClaraRetriever = self.retrievers["clara"]  # type: ignore[assignment]
        dtype = self.model.config.torch_dtype
        return [torch.from_numpy(clara.compressed(d)).to(self.model.device, dtype) for d in docs]


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-system/setting mean acc, em, f1 and latency; per-retriever mean Recall/Precision@k;
    the memory diagnostics, paired gaps and scores by answer position where measured."""
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
    summary = {"num_questions": len(rows), "generation": generation, "retrieval": retrieval}
    diagnostics = [row["diagnostics"] for row in rows if "diagnostics" in row]
    if diagnostics:  # only with answer_loss, so summaries without it keep their shape
        summary["diagnostics"] = {**mean_scores(diagnostics), "n": len(diagnostics)}
    if paired := paired_gaps(rows):
        summary["paired"] = paired
    if by_position := by_answer_position(rows):
        summary["by_answer_position"] = by_position
    return summary


def paired_gaps(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Whether memory is read, per question and with a standard error: `<system>/f1` is F1 with
    the oracle memory minus F1 with `wrong_memory` (each system scored both ways),
    `<system>/f1_foreign` minus F1 with `foreign_memory`, `answer_ce` the answer CE with another
    article's memory minus with the question's own."""
    gaps = {}
    for system in sorted({key.partition("/")[0] for row in rows for key in row["systems"]}):
        own = f"{system}/oracle"
        for name, other in ((f"{system}/f1", f"{system}/{WRONG}"), (f"{system}/f1_foreign", f"{system}/{FOREIGN}")):
            pairs = [(row["systems"][own]["f1"], row["systems"][other]["f1"])
                     for row in rows if own in row["systems"] and other in row["systems"]]
            if pairs:
                gaps[name] = paired_difference(pairs)
    ce = [(d["answer_ce_other"], d["answer_ce_own"]) for row in rows if (d := row.get("diagnostics"))]
    if ce:
        gaps["answer_ce"] = paired_difference(ce)
    return gaps
