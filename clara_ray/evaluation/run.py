"""Evaluate a checkpoint over a question set with Ray Data: one actor pool holds the model.

Resumable: every finished batch is appended to `predictions.jsonl.partial`; a rerun skips the
questions already there. The final `predictions.jsonl`, `summary.json` and report are written
to temporary files and renamed, so a crash never leaves a half-written result. The optional
reconstruction diagnostic runs after the questions as one Ray task with the actors' resources;
its results are kept in `reconstructions.jsonl` and reused on rerun.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable

from clara_ray.atomic import write_atomic
from clara_ray.config import InputError
from clara_ray.evaluation.config import EvalConfig
from clara_ray.evaluation.loaders import EvalQuestion, load_questions

log = logging.getLogger(__name__)
PARTIAL = "predictions.jsonl.partial"
RECONSTRUCTIONS = "reconstructions.jsonl"


def read_partial(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already scored; a line cut off by a crash is dropped (its question reruns)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["id"]] = row
    return rows


def questions_for(cfg: EvalConfig) -> list[EvalQuestion]:
    from clara_ray.evaluation.harness import check_foreign_docs

    d = cfg.data
    questions = load_questions(d.format, d.path, dataset=d.dataset, articles=d.article_indices, limit=d.limit,
                               per_article=d.per_article, max_candidates=d.max_candidates, seed=d.seed,
                               foreign=cfg.harness.foreign_docs_needed)
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise InputError(f"{d.path}: question id {q.id!r} occurs twice; ids must be unique")
        seen.add(q.id)
        if cfg.harness.needs_foreign_docs:  # fail before any model loads, not in an actor
            check_foreign_docs(q, cfg.harness.foreign_docs_for(q))
    return questions


def _load_model(cfg: EvalConfig):
    """The checkpoint as the config asks, and the torch thread count to compute with."""
    import torch

    from clara_ray import CLaRa

    threads = cfg.ray.torch_threads or torch.get_num_threads()
    return CLaRa.from_pretrained(cfg.checkpoint, device=cfg.device, **cfg.model_overrides), threads


class EvalActor:
    """Ray Data actor: loads the checkpoint once, scores batches of JSON-encoded questions.

    A question the model fails on fails alone (its batch is retried one question at a time): the
    others are scored and kept, and the run ends with an error naming it.

    Rows travel as JSON strings so Arrow never has to unify the schemas of nested, ragged
    fields (candidate lists, per-system results) across blocks.
    """

    def __init__(self, config_json: str):
        from clara_ray.evaluation.harness import Evaluator

        cfg = EvalConfig.model_validate_json(config_json)
        model, self.torch_threads = _load_model(cfg)
        self.evaluator = Evaluator(model, cfg.harness, minilm_path=cfg.minilm_path)
        self.store, self.store_candidates = None, cfg.store_candidates
        if cfg.store:
            from clara_ray.store import CompressedStore

            # a store compressed by another checkpoint would be searched in the wrong space
            self.store = CompressedStore.open(cfg.store, expect_checkpoint=cfg.checkpoint)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """One JSON row per question: its scores, or {"id", "error"} if it failed on its own."""
        from clara_ray.batches import run_isolated
        from clara_ray.threads import apply_torch_threads

        apply_torch_threads(self.torch_threads)  # Ray Data calls this in another thread than __init__
        questions = [EvalQuestion.model_validate_json(text) for text in batch["question"]]
        rows = [{"id": q.id, "error": f"question {q.id!r}: {type(row).__name__}: {row}"}
                if isinstance(row, Exception) else row
                for q, row in zip(questions, run_isolated(self._evaluate, questions))]
        return {"row": [json.dumps(row) for row in rows]}

    def _evaluate(self, questions: list[EvalQuestion]) -> list[dict[str, Any]]:
        from clara_ray.evaluation.retrievers import store_candidates

        if self.store is not None:
            questions = store_candidates(self.evaluator.model, self.store, questions, self.store_candidates)
        return self.evaluator.evaluate(questions)


def _score_with_ray(cfg: EvalConfig, todo: list[EvalQuestion]) -> Iterable[str]:
    import ray

    # Questions sharing candidates (one SQuAD article) sit together, so a batch compresses
    # each shared document once and the actor's cache serves the next batch.
    todo = sorted(todo, key=lambda q: (q.dataset, q.docs[:1], q.id))
    dataset = ray.data.from_items([{"question": q.model_dump_json()} for q in todo])
    scored = dataset.map_batches(
        EvalActor, fn_constructor_kwargs={"config_json": cfg.model_dump_json()},
        batch_size=cfg.ray.batch_size, compute=ray.data.ActorPoolStrategy(size=cfg.ray.actors),
        num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus,
    )
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        yield from (str(line) for line in batch["row"])


def _reconstruct_task(config_json: str, paragraphs: list[str]) -> list[dict[str, Any]]:
    from clara_ray.evaluation.diagnostics import reconstruct
    from clara_ray.threads import apply_torch_threads

    cfg = EvalConfig.model_validate_json(config_json)
    model, threads = _load_model(cfg)
    apply_torch_threads(threads)
    return reconstruct(model, paragraphs, batch_size=cfg.ray.batch_size)


def _reconstruction(cfg: EvalConfig, questions: list[EvalQuestion], out: Path) -> dict[str, Any]:
    """Reconstruct the first `harness.reconstruction` distinct gold paragraphs (once; a rerun
    reads them back) and summarise the scores."""
    import ray

    from clara_ray.evaluation.diagnostics import held_out_paragraphs, summarise_reconstruction

    path = out / RECONSTRUCTIONS
    if path.exists():
        results = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        paragraphs = held_out_paragraphs(questions, cfg.harness.reconstruction)
        if not paragraphs:
            raise InputError(f"{cfg.data.path}: no gold paragraph (pos_index) among the questions to reconstruct")
        log.info("reconstructing %d paragraphs", len(paragraphs))
        task = ray.remote(num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus)(_reconstruct_task)
        results = ray.get(task.remote(cfg.model_dump_json(), paragraphs))
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in results))
    return summarise_reconstruction(results)


def checkpoint_info(path: str) -> dict[str, Any]:
    """Compression rate and backbone from the saved config, for labels and plots."""
    from clara_ray.model.configuration import CLaRaConfig

    return CLaRaConfig.from_pretrained(path).model_dump(include={"backbone", "compression_rate", "doc_max_length",
                                                                  "trained"})


def _claim_output_dir(cfg: EvalConfig, out: Path) -> None:
    """Rows are reused on rerun only for the same checkpoint, data and harness settings."""
    identity = json.dumps(cfg.model_dump(include={"checkpoint", "model_overrides", "store", "store_candidates", "data", "harness"}), sort_keys=True)
    marker = out / "run_config.json"
    if marker.exists() and marker.read_text() != identity:
        raise InputError(f"{out} holds results of a different evaluation (see {marker}); "
                         "choose another output_dir or delete it")
    if not marker.exists():
        write_atomic(marker, identity)


def run_evaluation(cfg: EvalConfig) -> dict[str, Any]:
    from clara_ray.evaluation.harness import summarise
    from clara_ray.evaluation.positions import answer_position
    from clara_ray.evaluation.report import write_report

    info = checkpoint_info(cfg.checkpoint)  # fails early, naming the file, before anything is written
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.harness.reads_memory:
        info["compression_rate"] = None  # baselines only: no compressed documents are read
    _claim_output_dir(cfg, out)
    questions = questions_for(cfg)
    partial = out / PARTIAL
    done = {**read_partial(out / "predictions.jsonl"), **read_partial(partial)}
    if partial.exists():  # drop a line torn by a crash, so appended rows start on a fresh line
        write_atomic(partial, "".join(json.dumps(row) + "\n" for row in read_partial(partial).values()))
    todo = [q for q in questions if q.id not in done]
    log.info("%d questions, %d already scored, %d to go", len(questions), len(questions) - len(todo), len(todo))
    start = time.perf_counter()
    failed: list[str] = []
    if todo:
        from tqdm import tqdm

        with partial.open("a", encoding="utf-8") as fh, tqdm(total=len(questions), initial=len(questions) - len(todo),
                                                            desc="evaluate", unit="question") as bar:
            for line in _score_with_ray(cfg, todo):
                bar.update()
                error = json.loads(line).get("error")
                if error:  # kept out of the partial file: a rerun tries it again
                    log.warning("not scored: %s", error)
                    failed.append(error)
                    continue
                fh.write(line + "\n")
                fh.flush()
    if failed:
        raise InputError(f"{len(failed)} questions could not be evaluated (first: {failed[0]}); the others are "
                         f"kept in {partial}: fix or remove these and rerun")
    done = {**done, **read_partial(partial)}
    missing = [q.id for q in questions if q.id not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} questions were not scored (first: {missing[0]}); rerun to resume")
    # rows scored before answer positions were kept gain them (a rerun on a finished directory
    # rewrites its summary and report with the scores by answer position, scoring nothing again)
    rows = [done[q.id] if "answer_word" in done[q.id] else {**answer_position(q), **done[q.id]} for q in questions]
    reconstruction = _reconstruction(cfg, questions, out) if cfg.harness.reconstruction else None
    summary = {
        "label": cfg.label or f"CR={info['compression_rate']}",
        "checkpoint": cfg.checkpoint, "store": cfg.store, **info,
        "data": cfg.data.model_dump(), "harness": cfg.harness.model_dump(),
        "wall_seconds_this_run": round(time.perf_counter() - start, 2),
        **summarise(rows),
    }
    if reconstruction is not None:
        summary.setdefault("diagnostics", {})["reconstruction"] = reconstruction
    write_atomic(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_report([summary], out)
    partial.unlink(missing_ok=True)
    return summary
