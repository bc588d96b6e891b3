"""The ingest pipeline on Ray Data: stage orchestration, resume, errors and the summary.

Each stage that does real work (extract, caption, synthesize, embed) runs as a Ray Data
`map_batches` over the work not yet in its Parquet parts
(actor pools where a stage holds a converter, an API client or an embedder); results stream
back to the driver, which appends them as parts. Final files are rebuilt from all parts on
every run, so a rerun after any interruption writes the same files, without duplicates.
"""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from clara_ray.atomic import write_atomic
from clara_ray.config import InputError
from clara_ray.data.records import write_jsonl
from clara_ray.ingest.captions import Captioner, insert_captions
from clara_ray.ingest.chunking import chunk_documents
from clara_ray.ingest.config import ApiConfig, IngestConfig
from clara_ray.ingest.extract import Extractor
from clara_ray.ingest.hashing import content_key
from clara_ray.ingest.inputs import discover, error_row
from clara_ray.ingest.outputs import ERRORS, RAW, build_records, raw_knowledge_rows, write_records
from clara_ray.ingest.storage import StageParts, write_table
from clara_ray.ingest.synthesis import Synthesizer

log = logging.getLogger(__name__)


class IngestError(InputError, RuntimeError):
    """A run that cannot start (missing input, no API endpoint)."""


def _batch_rows(batch: dict) -> list[dict[str, Any]]:
    columns = {name: values.tolist() if hasattr(values, "tolist") else list(values)
               for name, values in batch.items()}
    size = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(size)]


MAX_BLOCKS = 1000


def _map_pass(rows: list[dict[str, Any]], blocks: int, parts: StageParts, bar, worker: type, worker_kwargs: dict,
              workers: int, cpus: float, batch_size: int, retries: int) -> None:
    """One Ray Data pass over `rows`; every block that comes back is checkpointed as a part."""
    import ray

    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote args given to map_batches but has no named max_task_retries yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        # One task at a time per actor, so that a worker that dies takes only its own task with it.
        # Ray restarts the actor and retries that task `retries` times (its default is forever,
        # which would loop on a file that kills its worker every time).
        ds = ds.map_batches(worker, fn_constructor_kwargs=worker_kwargs, batch_size=batch_size, num_cpus=cpus,
                            batch_format="numpy", max_restarts=-1, max_task_retries=retries,
                            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows)),
                                                               max_tasks_in_flight_per_actor=1))
    # A block whose retries are used up is dropped instead of aborting the dataset; run_stage
    # finds its rows missing. (Exceptions never get here: the workers turn them into error rows.)
    ds.context.max_errored_blocks = -1
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        done = _batch_rows(batch)
        parts.add(done)  # checkpoint before counting it as done
        bar.update(len(done))
    del ds
    _release_restarted_workers(worker)


def _release_restarted_workers(worker: type) -> None:
    """Kills this driver's workers of `worker` that outlived the pass. Ray Data releases its pool by
    dropping the handles, but an actor that died and that Ray restarted stays referenced (Ray 2.60)
    and would hold its CPUs from the next stage for as long as this process lives. Passes in one
    driver run one after another, so any such worker still alive here is a leftover."""
    import ray
    from ray._raylet import ActorID

    # The public state API needs the dashboard, which a local `ray.init` may run without: read
    # the actor table from the GCS instead.
    job = ray.get_runtime_context().get_job_id()
    name = f"MapWorker(MapBatches({worker.__name__}))"
    core_worker = ray._private.worker.global_worker.core_worker
    for actor_id, actor in ray._private.state.actors().items():
        if actor["State"] != "DEAD" and actor["JobID"] == job and actor["ActorClassName"] == name:
            ray.kill(core_worker.get_actor_handle(ActorID.from_hex(actor_id)), no_restart=True)


def _worker_died(worker: type, lost: list[dict[str, Any]], retries: int) -> list[dict[str, Any]]:
    """Error rows for the items whose worker died on every attempt."""
    reason = (f"its worker process died on each of {retries + 1} attempt(s) (killed by the OOM killer, or "
              "crashed); the Ray worker logs have the cause")
    if not hasattr(worker, "empty_row"):  # a stage with no per-item result to give up on
        raise IngestError(f"{worker.__name__}: {len(lost)} item(s) lost: {reason}")
    return [{**worker.empty_row(r["key"]), "status": "error", "error_kind": "worker_died", "error": reason}
            for r in lost]


def run_stage(name: str, parts: StageParts, todo: list[dict[str, Any]], worker: type,
              worker_kwargs: dict, workers: int, cpus: float, progress: bool,
              batch_size: int = 1, *, retries: int) -> dict[str, dict]:
    """Map `worker` over the rows of `todo` whose key has no cached result; return key -> result.

    Items whose worker died `retries` + 1 times in a second pass, alone in their task, get a
    `worker_died` row (workers that declare `empty_row`) or stop the run (the others).
    """
    from tqdm import tqdm

    done = parts.rows()
    unique = {r["key"]: r for r in todo}
    pending = [r for key, r in unique.items() if key not in done]
    with tqdm(total=len(unique), initial=len(unique) - len(pending), desc=name, unit="item",
              disable=not progress) as bar:
        if pending:
            run = dict(parts=parts, bar=bar, worker=worker, worker_kwargs=worker_kwargs, workers=workers,
                       cpus=cpus, retries=retries)
            # Small blocks: each block is one checkpointed part, the unit of work lost on a kill.
            blocks = min(-(-len(pending) // batch_size), MAX_BLOCKS)
            _map_pass(pending, blocks, batch_size=batch_size, **run)
            lost = [r for r in pending if r["key"] not in parts.rows()]
            # A block is lost when its item kills the worker on every try, when a block-mate does,
            # or when the node running it goes away (Ray gives up on a task whose actor's node
            # vanished, without a retry). One more pass, one item per task, tells them apart.
            if lost:
                _map_pass(lost, min(len(lost), MAX_BLOCKS), batch_size=1, **run)
                lost = [r for r in lost if r["key"] not in parts.rows()]
            if lost:
                parts.add(_worker_died(worker, lost, retries))
                bar.update(len(lost))
            done = parts.rows()
    return {r["key"]: done[r["key"]] for r in todo if r["key"] in done}


def _chunk_documents(docs: list[dict[str, Any]], captions: dict[str, str], cfg: IngestConfig) -> list[dict[str, Any]]:
    """Documents (text with captions in, DoclingDocument JSON) -> chunks, ordered by source.

    Runs on the driver: chunking costs milliseconds per document, less than starting Ray workers
    (and loading a tokenizer in each) for it, and the result feeds the next stage's keys directly.
    """
    docs = sorted(docs, key=lambda d: d["source"])
    chunked = chunk_documents(docs, captions, cfg.chunk)
    unique: dict[str, dict] = {}
    for doc in docs:
        for i, text in enumerate(chunked[doc["key"]]):
            # The same passage twice (in one or two documents) would make duplicate records.
            unique.setdefault(content_key(text), {"key": content_key(text), "doc_key": doc["key"],
                                                  "source": doc["source"], "index": i, "text": text})
    return list(unique.values())


def _embed(chunks: list[dict[str, Any]], cfg: IngestConfig, work: Path):
    """MiniLM vectors of the chunks, cached like every other stage."""
    import numpy as np

    from clara_ray.ingest.negatives import Embedder

    neg = cfg.negatives
    done = run_stage("embed", StageParts(work, "embed"), [{"key": c["key"], "text": c["text"]} for c in chunks],
                     Embedder, {"batch_size": neg.embed_batch_size}, 1, neg.cpus_per_worker, cfg.progress,
                     batch_size=neg.embed_batch_size, retries=cfg.worker_retries)
    keys = [c["key"] for c in chunks]
    return keys, np.stack([np.asarray(done[k]["embedding"], dtype=np.float32) for k in keys])


def _negatives(chunks: list[dict[str, Any]], cfg: IngestConfig, work: Path) -> dict[str, list[str]]:
    from clara_ray.ingest.negatives import mined_negatives, random_negatives

    count = max(cfg.negatives.instruct_docs, cfg.negatives.end_to_end_docs) - 1
    if len(chunks) < 2 or count <= 0:
        return {c["key"]: [] for c in chunks}
    if cfg.negatives.method == "random":
        return random_negatives([c["key"] for c in chunks], count, cfg.negatives.seed)
    keys, vectors = _embed(chunks, cfg, work)
    return mined_negatives(keys, vectors, count)


@contextlib.contextmanager
def api_endpoint(cfg: IngestConfig) -> Iterator[tuple[ApiConfig, IngestConfig]]:
    """The configured API, or the bundled model served on 127.0.0.1 when none is configured.

    The embedded server generates one reply at a time on CPU, so requests are serialised (one
    worker per API stage) and given a long timeout instead of being retried while they queue.
    """
    api = cfg.api.resolved()
    if api.base_url and api.text_model or cfg.until == "extract":
        yield api, cfg
        return
    if not cfg.runs("synthesize"):  # only captions would need it, and the bundled text model cannot caption
        log.warning("no API configured: images are not captioned")
        yield api, cfg.model_copy(update=dict(caption=cfg.caption.model_copy(update=dict(enabled=False))))
        return
    if not api.embedded_fallback:
        raise IngestError("no API endpoint: set api.base_url/api.text_model in the config, or "
                          "OPENAI_BASE_URL and CLARA_TEXT_MODEL in the environment or .env")
    from clara_ray.llm_server import running_server

    log.warning("no API configured: serving %s locally on 127.0.0.1 (low-quality data; text-only, so images "
                "are not captioned)", api.embedded_backbone)
    with running_server(api.embedded_backbone) as base_url:
        model = api.embedded_backbone
        # One worker each: the local server decodes one request at a time.
        yield (api.model_copy(update=dict(base_url=base_url, api_key="local", text_model=model,
                                          vision_model=model, timeout_s=max(api.timeout_s, 900.0))),
               cfg.model_copy(update=dict(
                   caption=cfg.caption.model_copy(update=dict(enabled=False, workers=1)),
                   synthesis=cfg.synthesis.model_copy(update=dict(workers=1)))))


def _init_ray(cfg: IngestConfig) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one tqdm bar per stage on the driver instead
    ctx.print_on_execution_start = False


def run_ingest(cfg: IngestConfig) -> dict[str, Any]:
    """Run the stages up to `cfg.until`; returns (and writes out/summary.json) the summary."""
    if not cfg.input or not Path(cfg.input).is_dir():
        raise IngestError(f"input directory not found: {cfg.input!r}")
    if not cfg.out:
        raise IngestError("no output directory given (--out or out: in the config)")
    input_dir, out_dir = Path(cfg.input), Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    _init_ray(cfg)
    with api_endpoint(cfg) as (api, cfg):
        return _run(cfg, api, input_dir, out_dir, work)


def _run(cfg: IngestConfig, api: ApiConfig, input_dir: Path, out_dir: Path, work: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {"until": cfg.until}
    files, errors = discover(input_dir)
    summary["inputs_skipped"] = len(errors)
    extracted = run_stage("extract", StageParts(work, "extract"), files, Extractor,
                          {"cfg": cfg.extract.model_dump(), "out_dir": str(out_dir)},
                          cfg.extract.workers, cfg.extract.cpus_per_worker, cfg.progress, retries=cfg.worker_retries)
    docs = []
    for f in files:
        row = extracted[f["key"]]
        for error in json.loads(row["image_errors"]):
            if isinstance(error, str):  # parts written before picture errors had kinds
                error = {"kind": "corrupt_image", "reason": error}
            errors.append(error_row("extract", f["source"], f["key"], error["kind"], error["reason"]))
        if row["status"] != "ok":
            errors.append(error_row("extract", f["source"], f["key"], row["error_kind"], row["error"]))
        else:
            docs.append({"key": f["key"], "source": f["source"], "text": row["text"],
                         "images": json.loads(row["images"]), "pages": row["pages"], "format": row["format"],
                         "document": row.get("document") or ""})  # parts cached before documents were kept: ""
    summary.update(files=len(files), documents=len(docs), documents_failed=len(files) - len(docs),
                   pages=sum(d["pages"] for d in docs), images=sum(len(d["images"]) for d in docs),
                   formats=dict(sorted(Counter(d["format"] for d in docs).items())))

    if cfg.runs("caption"):
        chunks = _caption_and_chunk(cfg, api, docs, out_dir, work, errors, summary)
        if cfg.runs("synthesize"):
            _synthesize_and_write(cfg, api, chunks, out_dir, work, errors, summary)

    write_jsonl(out_dir / ERRORS, errors)
    summary["errors"] = len(errors)
    summary["errors_by_kind"] = dict(sorted(Counter(e["kind"] for e in errors).items()))
    write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def _caption_and_chunk(cfg: IngestConfig, api: ApiConfig, docs: list[dict], out_dir: Path, work: Path,
                       errors: list[dict], summary: dict) -> list[dict]:
    """Caption every image, put captions at their markers, chunk; writes chunks + raw knowledge."""
    images = []
    for doc in docs:
        for image in doc["images"]:
            jpeg = (out_dir / image["path"]).read_bytes()
            images.append({"key": content_key(jpeg, api.vision_model, cfg.caption.prompt),
                           "path": image["path"], "image_id": image["image_id"], "source": doc["source"],
                           "doc_key": doc["key"]})
    if not cfg.caption.enabled:
        if images:
            log.warning("captioning is off: %d image(s) left out of the text", len(images))
        images = []
    captioned = run_stage("caption", StageParts(work, "caption"), images, Captioner,
                          {"api": api.model_dump(), "cfg": cfg.caption.model_dump(), "out_dir": str(out_dir)},
                          cfg.caption.workers, cfg.caption.cpus_per_worker, cfg.progress, retries=cfg.worker_retries)
    captions, uncaptioned_docs = {}, set()
    for image in images:
        row = captioned[image["key"]]
        if row["status"] == "ok":
            captions[image["image_id"]] = row["caption"]
        else:
            uncaptioned_docs.add(image["doc_key"])
            errors.append(error_row("caption", f"{image['source']} ({image['image_id']})", image["key"],
                                    row["error_kind"], row["error"]))
    texts = [{**d, "text": insert_captions(d["text"], captions)} for d in docs]
    chunks = _chunk_documents([t for t in texts if t["text"]], captions, cfg)
    for text in texts:
        if not text["text"] and text["key"] not in uncaptioned_docs:  # else already reported
            reason = "no text left after captioning" if cfg.caption.enabled else "only images, and captioning is off"
            errors.append(error_row("chunk", text["source"], text["key"], "no_text", reason))
    write_table(work / "chunks.parquet", chunks)
    write_jsonl(out_dir / RAW, raw_knowledge_rows(chunks))
    summary.update(images_captioned=len(captions), chunks=len(chunks))
    return chunks


def synthesis_key(chunk: str, api: ApiConfig, cfg: IngestConfig) -> str:
    """A chunk's synthesis is redone when its text, the model or the synthesis settings change."""
    return content_key(content_key(chunk), api.text_model, cfg.synthesis.model_dump())


def _synthesize_and_write(cfg: IngestConfig, api: ApiConfig, chunks: list[dict], out_dir: Path, work: Path,
                          errors: list[dict], summary: dict) -> None:
    todo = [{"key": synthesis_key(c["text"], api, cfg), "text": c["text"]} for c in chunks]
    done = run_stage("synthesize", StageParts(work, "synthesize"), todo, Synthesizer,
                     {"api": api.model_dump(), "cfg": cfg.synthesis.model_dump()},
                     cfg.synthesis.workers, cfg.synthesis.cpus_per_worker, cfg.progress, retries=cfg.worker_retries)
    by_chunk = {}
    for chunk, item in zip(chunks, todo):
        row = done[item["key"]]
        by_chunk[chunk["key"]] = row
        if row["status"] != "ok":
            errors.append(error_row("synthesize", f"{chunk['source']}#chunk{chunk['index']}", chunk["key"],
                                    row["error_kind"], row["error"]))
    good = [c for c in chunks if by_chunk[c["key"]]["status"] == "ok"]
    negatives = _negatives(chunks, cfg, work)  # every chunk may serve as a negative, synthesized or not
    records = build_records(chunks, by_chunk, negatives, cfg.negatives.instruct_docs,
                            cfg.negatives.end_to_end_docs, cfg.negatives.seed)
    summary["records"] = write_records(out_dir, records)
    summary.update(chunks_synthesized=len(good),
                   qa_pairs=sum(len(json.loads(by_chunk[c["key"]]["qa"])) for c in good),
                   regeneration_rounds=sum(by_chunk[c["key"]]["rounds"] for c in good))
