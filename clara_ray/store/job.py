"""The precompress Ray job: Ray Data reads a corpus, an actor pool of compressors runs
`CLaRa.compress_documents` in batches, and the driver appends the vectors to a store as shards.

Each shard is committed atomically as it arrives, so a killed job loses at most one shard of work;
the rerun skips every id already in the store (published or staged) and publishes once at the end.

A record that is not a document (bad JSON, no text) stops the job, naming its file and record. A
document that is one but cannot be compressed (text that is not Unicode, or that the model
fails on: found by retrying its batch one document at a time) is left out and named in the
summary's `failed`, every other document is stored; a rerun retries only what is still missing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clara_ray.batches import run_isolated
from clara_ray.data.records import RecordError, jsonl_texts
from clara_ray.parsing import ParseError, parse_json
from clara_ray.store.builder import IndexBuilder, StoreWriter, write_index
from clara_ray.store.errors import StoreError
from clara_ray.store.index import IndexConfig
from clara_ray.store.manifest import CheckpointIdentity, checkpoint_fingerprint
from clara_ray.store.shards import DocRecord
from clara_ray.threads import apply_torch_threads
from clara_ray.unicode import encoding_problem, printable

log = logging.getLogger(__name__)

NO_CHUNK = -1  # Arrow columns cannot mix None and int cheaply inside Ray batches
COLUMNS = ("id", "text", "source", "chunk", "error")  # error: why the document cannot be stored, "" if it can


class IndexTask(BaseModel):
    """Where the store's index is built: in the job's driver, or in a Ray task with these resources. On a
    cluster the driver sits on the CPU head; a task with num_gpus lands on a GPU node, where faiss-gpu
    trains and fills the index (PCA on that node's cores) and writes it back as a CPU index."""
    model_config = ConfigDict(extra="forbid")

    run_in: Literal["driver", "task"] = "driver"
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1, gt=0)
    # bytes; the training sample alone is index.train_size x n*hidden x 4 (8 GiB at 65,536 x 32,768)
    memory: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _gpus_need_a_task(self) -> "IndexTask":
        if self.num_gpus and self.run_in == "driver":
            raise ValueError("index_task.num_gpus > 0 needs index_task.run_in=task (the driver holds no GPU)")
        return self

    def remote_options(self) -> dict:
        """`ray.remote` options of the task (run_in: task)."""
        return {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus, "max_retries": 0,
                **({"memory": self.memory} if self.memory else {})}

    def builder(self) -> IndexBuilder:
        if self.run_in == "driver":
            return write_index
        import ray

        remote = ray.remote(**self.remote_options())(write_index)
        return lambda *args: ray.get(remote.remote(*args))


class PrecompressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1)  # documents per compress_documents call
    shard_size: int = Field(1024, ge=1)  # documents per committed shard (work lost on a crash)
    actors: int = Field(1, ge=1)  # compressor replicas: one per GPU on a cluster
    # the corpus is read in at least this many blocks: a block goes to one actor whole, so few
    # large blocks leave actors idle while the last one finishes
    min_blocks: int = Field(64, ge=1)
    num_cpus_per_actor: float = Field(0.5, gt=0)  # fractional here so Ray Data's read tasks still run
    num_gpus_per_actor: float = Field(0, ge=0)
    # Custom Ray resources per actor, e.g. {"a10g_node": 1} for one compressor per node of a type
    # that advertises that resource.
    resources_per_actor: dict[str, float] = Field(default_factory=dict)
    device: str = "cpu"
    torch_threads: int = Field(0, ge=0)  # per actor; 0 = torch default
    ray_address: str | None = None  # None: connect to a running cluster if any, else start one
    progress: bool = True  # a progress bar (documents/s, ETA) on stderr
    index: IndexConfig = Field(default_factory=IndexConfig)
    index_task: IndexTask = Field(default_factory=IndexTask)


def checkpoint_config(checkpoint: str | Path):
    """The CLaRaConfig a checkpoint directory was saved with (no weights loaded)."""
    from clara_ray.model import CLaRaConfig

    return CLaRaConfig.from_pretrained(checkpoint)


def checkpoint_identity_from_dir(checkpoint: str | Path) -> CheckpointIdentity:
    """The checkpoint's identity without loading its weights (config JSON + backbone config)."""
    from transformers import AutoConfig

    from clara_ray.backbones import resolve_backbone

    path = Path(checkpoint)
    config = checkpoint_config(path)
    hidden = AutoConfig.from_pretrained(resolve_backbone(config.backbone)).hidden_size
    return CheckpointIdentity(
        fingerprint=checkpoint_fingerprint(path), backbone=config.backbone,
        compression_rate=config.compression_rate, num_memory_tokens=config.num_memory_tokens,
        hidden_size=hidden, path=str(path.resolve()),
    )


def corpus_files(corpus: str | Path) -> tuple[list[str], list[str]]:
    """(JSONL files, Parquet files) of a file or a directory (searched recursively)."""
    root = Path(corpus)
    if not root.exists():
        raise StoreError(f"corpus {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    jsonl = [str(p) for p in files if p.suffix == ".jsonl"]
    parquet = [str(p) for p in files if p.suffix == ".parquet"]
    if not jsonl and not parquet:
        raise StoreError(f"corpus {root}: no .jsonl or .parquet files")
    return jsonl, parquet


def doc_id(text: str, source: str, chunk: int) -> str:
    """A stable id for records without one, so reruns recognise the same document."""
    return "sha1-" + hashlib.sha1(f"{source}\0{chunk}\0{text}".encode()).hexdigest()[:20]


def normalise_record(record: dict, where: str) -> dict:
    """id/text/source/chunk of one corpus record; errors name the file and the record."""
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        shown = json.dumps(record, default=str)[:120]
        raise StoreError(f"{where}: record {shown}: field 'text' missing or empty")
    source = str(record.get("source") or where)
    chunk = record.get("chunk")
    if chunk is None or (isinstance(chunk, float) and np.isnan(chunk)):
        chunk = NO_CHUNK
    elif isinstance(chunk, (float, np.floating)) and float(chunk).is_integer():
        chunk = int(chunk)  # nullable integer columns arrive as floats in numpy batches
    elif not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool):
        raise StoreError(f"{where}: record id={record.get('id')!r}: field 'chunk' must be an integer, got {chunk!r}")
    rid = record.get("id")
    rid = str(rid) if rid not in (None, "") else doc_id(printable(text), source, int(chunk))
    row = {"id": rid, "text": text, "source": source, "chunk": int(chunk), "error": ""}
    problems = [f"field {key!r} {problem}" for key in ("id", "text", "source")
                if (problem := encoding_problem(row[key]))]
    if problems:
        # Arrow cannot carry such text to the compressors: the row travels escaped, marked failed.
        row = {**row, "id": printable(rid), "text": "", "source": printable(source)}
        row["error"] = document_error(row, "; ".join(problems))
    return row


def document_error(row: dict, reason: str) -> str:
    """Why one document is not stored, naming its record as the job's other errors do."""
    return f"{row['source']}: record id={row['id']!r}: {reason}"


def _jsonl_lines_source(paths: list[str]):
    """A Ray Data source of the lines of JSONL files: {text, path, line}. Not read_text, which
    breaks lines at U+2028 and the other separators of str.splitlines (JSON strings may hold them as
    they are) and drops the line numbers errors should name."""
    from ray.data.datasource import FileBasedDatasource

    class JsonlLines(FileBasedDatasource):
        _FILE_EXTENSIONS = ["jsonl"]

        def _read_stream(self, f: "pyarrow.NativeFile", path: str) -> Iterator["pyarrow.Table"]:
            import pyarrow as pa

            try:
                lines = list(jsonl_texts(f.readall().split(b"\n"), path))
            except RecordError as exc:
                raise StoreError(str(exc)) from None
            rows = {"text": [text for _, text in lines], "path": [path] * len(lines),
                    "line": [number for number, _ in lines]}
            if lines:
                yield pa.table(rows)

    return JsonlLines(paths)


def _parse_jsonl_lines(batch: dict) -> dict:
    rows = []
    for line, path, number in zip(batch["text"], batch["path"], batch["line"]):
        try:
            record = parse_json(line)
        except ParseError as exc:
            raise StoreError(f"{path}:{number}: {exc.why}") from None
        if not isinstance(record, dict):
            raise StoreError(f"{path}:{number}: a corpus record is a JSON object, got {type(record).__name__}")
        rows.append(normalise_record(record, path))
    return _columns(rows)


def _normalise_parquet_rows(batch: dict) -> dict:
    names = list(batch)
    rows = [normalise_record({n: batch[n][i] for n in names}, str(batch["path"][i]))
            for i in range(len(batch["path"]))]
    return _columns(rows)


def _columns(rows: list[dict]) -> dict:
    return {key: np.array([r[key] for r in rows], dtype=object if key != "chunk" else np.int64) for key in COLUMNS}


def read_corpus(corpus: str | Path, min_blocks: int | None = None):
    """A Ray Dataset of {id, text, source, chunk} rows from JSONL and/or Parquet files."""
    import ray

    jsonl, parquet = corpus_files(corpus)
    parts = []
    if jsonl:
        # read as text lines: records may carry arbitrary extra fields that Arrow's JSON schema
        # inference would choke on
        parts.append(ray.data.read_datasource(_jsonl_lines_source(jsonl), override_num_blocks=min_blocks)
                     .map_batches(_parse_jsonl_lines, batch_format="numpy"))
    if parquet:
        parts.append(ray.data.read_parquet(parquet, include_paths=True, override_num_blocks=min_blocks)
                     .map_batches(_normalise_parquet_rows, batch_format="numpy"))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


class DropKnown:
    """Filters out ids the store already holds (resume and incremental add)."""

    def __init__(self, known: frozenset[str]):
        self.known = known

    def __call__(self, batch: dict) -> dict:
        keep = np.array([i not in self.known for i in batch["id"]], dtype=bool)
        return {k: v[keep] for k, v in batch.items()}


class Compressor:
    """One CLaRa replica per actor; loaded once, then fed batches of texts."""

    def __init__(self, checkpoint: str, device: str, torch_threads: int):
        import torch

        from clara_ray import CLaRa

        self.torch_threads = torch_threads or torch.get_num_threads()
        self.model = CLaRa.from_pretrained(checkpoint, device=device)
        self.model.merge_adapter("compressor")  # the only adapter an actor runs

    def __call__(self, batch: dict) -> dict:
        apply_torch_threads(self.torch_threads)  # Ray Data calls this in another thread than __init__
        errors = [str(e) for e in batch["error"]]
        todo = [i for i, e in enumerate(errors) if not e]
        outcomes = run_isolated(self._compress, [str(batch["text"][i]) for i in todo])
        vectors = np.zeros((len(errors), *self.shape), dtype=np.float16)  # a failed document's stay zero
        truncated = np.zeros(len(errors), dtype=bool)
        for i, result in zip(todo, outcomes):
            if isinstance(result, Exception):
                row = {key: batch[key][i] for key in ("id", "source")}
                errors[i] = document_error(row, f"could not be compressed: {type(result).__name__}: {result}")
            else:
                vectors[i], truncated[i] = result
        return {**batch, "error": np.array(errors, dtype=object), "vectors": vectors, "truncated": truncated}

    @property
    def shape(self) -> tuple[int, int]:
        return (self.model.num_memory_tokens, self.model.hidden_size)

    def _compress(self, texts: list[str]) -> list[tuple[np.ndarray, bool]]:
        """(vectors, truncated) per text: the compressor reads doc_max_length tokens and drops the rest."""
        lengths = [len(ids) for ids in self.model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        vectors = self.model.compress_documents(texts).float().cpu().numpy().astype(np.float16)
        return [(v, n > self.model.config.doc_max_length) for v, n in zip(vectors, lengths)]


def _init_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


def _shards(batches: Iterable[dict], size: int) -> Iterator[dict]:
    """Compressed batches regrouped into shards of at least `size` documents (the last: the rest)."""
    held, count = [], 0
    for batch in batches:
        held.append(batch)
        count += len(batch["id"])
        if count >= size:
            yield {key: np.concatenate([b[key] for b in held]) for key in held[0]}
            held, count = [], 0
    if held:
        yield {key: np.concatenate([b[key] for b in held]) for key in held[0]}


def _counted(batches: Iterable[dict], bar) -> Iterator[dict]:
    for batch in batches:
        bar.update(len(batch["id"]))
        yield batch


def _log_progress(done: int, todo: int, failed: int, seconds: float) -> None:
    """One line per committed shard: what a batch job's log shows where a progress bar cannot redraw."""
    from tqdm import tqdm

    rate = done / seconds if seconds > 0 else 0.0
    left = tqdm.format_interval((todo - done) / rate) if rate else "?"
    log.info("compressed %d of %d docs (%d failed), %.1f docs/s, %s to go", done, todo, failed, rate, left)


def run_precompress(checkpoint: str | Path, corpus: str | Path, out: str | Path, cfg: PrecompressConfig) -> dict:
    """Compress every corpus document the store does not hold yet and publish a new version."""
    import ray
    from tqdm import tqdm

    identity = checkpoint_identity_from_dir(checkpoint)
    window = checkpoint_config(checkpoint).doc_max_length
    corpus_files(corpus)  # fail on a bad path before starting Ray
    _init_ray(cfg.ray_address)
    stored = skipped = truncated = 0
    failed: list[str] = []
    with StoreWriter(out, identity, cfg.index) as writer:
        already = len(writer.known_ids)
        pending = read_corpus(corpus, cfg.min_blocks).map_batches(DropKnown(frozenset(writer.known_ids)), batch_format="numpy")
        todo = pending.count()  # a pass over the corpus without the model: cheap next to compressing it
        log.info("%d documents to compress (%d already stored)", todo, already)
        compressed = pending.map_batches(
            Compressor,
            fn_constructor_kwargs=dict(checkpoint=str(checkpoint), device=cfg.device, torch_threads=cfg.torch_threads),
            batch_size=cfg.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.actors),
            num_cpus=cfg.num_cpus_per_actor,
            num_gpus=cfg.num_gpus_per_actor,
            resources=cfg.resources_per_actor or None,
        )
        # Nothing new (a rerun, or documents all stored already): no compressor is started for nothing.
        batches = compressed.iter_batches(batch_size=cfg.batch_size, batch_format="numpy") if todo else []
        started = time.monotonic()
        with tqdm(total=todo, desc="precompress", unit="doc", disable=not cfg.progress) as bar:
            for batch in _shards(_counted(batches, bar), cfg.shard_size):
                ok = np.array([not e for e in batch["error"]], dtype=bool)
                for error in batch["error"][~ok]:
                    log.warning("not stored: %s", error)
                    failed.append(str(error))
                docs = [DocRecord(id=str(i), text=str(t), source=str(s), chunk=None if c == NO_CHUNK else int(c))
                        for i, t, s, c in zip(batch["id"][ok], batch["text"][ok], batch["source"][ok],
                                              batch["chunk"][ok])]
                added = writer.add(batch["vectors"][ok], docs)
                stored, skipped = stored + added, skipped + len(docs) - added
                truncated += int(batch["truncated"][ok].sum())
                _log_progress(stored + skipped + len(failed), todo, len(failed), time.monotonic() - started)
        if failed and not writer.staged and writer.current is None:
            raise StoreError(f"no document could be stored; {len(failed)} failed, first: {failed[0]}")
        version = writer.publish(build_index=cfg.index_task.builder())
        total = writer.current.num_docs
    if truncated:
        log.warning("%d of %d documents were longer than the model's window (doc_max_length=%d tokens) and were "
                    "truncated: the store cites text the model never read. Chunk the corpus to at most %d tokens "
                    "(ingest: chunk.max_tokens).", truncated, stored + skipped, window, window)
    return {"version": version, "new_docs": stored, "duplicates_skipped": skipped,
            "already_stored": already, "total_docs": total, "index": writer.current.index.kind, "failed": failed,
            "truncated": truncated, "doc_max_length": window}
