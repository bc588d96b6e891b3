"""Stage JSONL through Ray Data: validated at read time, sharded to Ray Train workers.

Each row carries the record as normalised JSON plus the file and line it came from (and whether
it is a window of a longer document). The read validates every line with `parse_record`, so a
bad record fails the read with `file:line` (on the driver, before any worker starts) instead of
being dropped or crashing a training step.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from clara_ray.config import ConfigError
from clara_ray.data.records import RECORD_TYPES, Record, RecordError, jsonl_objects, parse_record, window_span

if TYPE_CHECKING:
    import pyarrow
    import ray.data

RECORD_COLUMN = "record"
WINDOW_COLUMN = "window"  # 1 where the record is a window of a longer document (has a doc_span)


def _datasource_class():
    # Built lazily: importing Ray Data costs seconds and the CLI's --help must stay instant.
    from ray.data.datasource import FileBasedDatasource

    class StageRecordsDatasource(FileBasedDatasource):
        """JSONL files of one stage's records; each line validated as it is read."""

        _FILE_EXTENSIONS = ["jsonl"]

        def __init__(self, paths, stage: str, doc_max_length: int | None = None, **kwargs):
            super().__init__(paths, **kwargs)
            self.stage, self.doc_max_length = stage, doc_max_length

        def _read_stream(self, f: "pyarrow.NativeFile", path: str) -> Iterator["pyarrow.Table"]:
            import pyarrow as pa

            rows = {RECORD_COLUMN: [], "source": [], "line": [], WINDOW_COLUMN: []}
            for number, obj in jsonl_objects(f.readall().split(b"\n"), path):
                record = parse_record(obj, self.stage, path, number, self.doc_max_length)
                rows[RECORD_COLUMN].append(record.model_dump_json())
                rows["source"].append(path)
                rows["line"].append(number)
                rows[WINDOW_COLUMN].append(int(window_span(record) is not None))
            if rows["line"]:
                yield pa.table(rows)

    return StageRecordsDatasource


def _resolve(paths: list[str]) -> list[str]:
    resolved = []
    for raw in paths:
        if "://" in raw:  # remote storage: Ray Data resolves it
            resolved.append(raw)
            continue
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            raise RecordError(raw, None, "data file not found")
        resolved.append(str(path))
    return resolved


def read_stage_dataset(paths: list[str], stage: str, doc_max_length: int | None = None) -> "ray.data.Dataset":
    """Read and validate stage records; materialised, so errors surface here, on the driver.
    `doc_max_length`: the model's, which every window's `doc_span` must fit (None: not checked)."""
    import ray.data

    if stage not in RECORD_TYPES:
        raise ValueError(f"unknown stage {stage!r}")
    source = _datasource_class()(_resolve(paths), stage=stage, doc_max_length=doc_max_length)
    ds = ray.data.read_datasource(source).materialize()
    if ds.count() == 0:
        raise RecordError(", ".join(paths), None, "no records")
    return ds


def count_windows(dataset: "ray.data.Dataset") -> int:
    """Records of a read stage dataset that are windows of a longer document (with a `doc_span`)."""
    return int(dataset.sum(WINDOW_COLUMN) or 0)


def records_from_batch(batch: dict, stage: str) -> list[Record]:
    """Rebuild typed records from a `iter_batches(batch_format="numpy")` batch."""
    record_type = RECORD_TYPES[stage]
    return [record_type.model_validate_json(text) for text in batch[RECORD_COLUMN]]


def record_size(record: Record) -> int:
    """Characters the model reads and writes for a record: what its padded length follows."""
    return sum(len(d) for d in record.docs) + sum(len(t) for t in getattr(record, "question", []) or []) \
        + sum(len(a) for a in record.answers)


def document_size(record: Record) -> tuple:
    """Length-bucketing key that keeps records listing the same documents next to each other:
    documents' size first (the compressor's padding), then the documents themselves, then the
    record's own size."""
    return sum(len(d) for d in record.docs), tuple(record.docs), record_size(record)


def length_bucketed(batches: Iterator[list[Record]], buckets: int, rng: random.Random,
                    key=record_size) -> Iterator[list[Record]]:
    """Regroup each run of `buckets` micro-batches by record size (`key`), then shuffle their
    order: the same records in the same number of micro-batches, each padded far less."""
    while True:
        window = list(itertools.islice(batches, buckets))
        if not window:
            return
        size = len(window[0])
        records = sorted((r for b in window for r in b), key=key)
        regrouped = [records[i:i + size] for i in range(0, len(records), size)]
        rng.shuffle(regrouped)
        yield from regrouped


def document_grouped(records: Iterator[Record], window: int, rng: random.Random | None) -> Iterator[Record]:
    """The records of each run of `window`, those that list the same documents made adjacent;
    the groups in shuffled order (`rng`), or in order of first appearance without one."""
    while True:
        chunk = list(itertools.islice(records, window))
        if not chunk:
            return
        groups: dict[tuple[str, ...], list[Record]] = {}
        for record in chunk:
            groups.setdefault(tuple(record.docs), []).append(record)
        order = list(groups.values())
        if rng is not None:
            rng.shuffle(order)
        for group in order:
            yield from group


def _cut(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive full micro-batches of `size` records (a short tail is dropped)."""
    while len(batch := list(itertools.islice(records, size))) == size:
        yield batch


def arrange(batches: Iterator[list[Record]], micro_size: int, shuffle_buffer: int, length_buckets: int,
            group_documents: bool, seed: int) -> Iterator[list[Record]]:
    """The stream's micro-batches as training sees them: document groups, then length buckets
    (see DataConfig). Without group_documents the stream arrives shuffled by Ray Data."""
    if group_documents:
        window = max(shuffle_buffer, micro_size * max(length_buckets, 1))
        shuffle = random.Random(seed) if shuffle_buffer else None
        batches = _cut(document_grouped(itertools.chain.from_iterable(batches), window, shuffle), micro_size)
    if length_buckets > 1:
        batches = length_bucketed(batches, length_buckets, random.Random(seed),
                                  key=document_size if group_documents else record_size)
    return batches


def micro_batches(shard, stage: str, micro_size: int, shuffle_buffer: int, seed: int,
                  length_buckets: int = 0, group_documents: bool = False) -> Iterator[list[Record]]:
    """Endless stream of full micro-batches from a worker's shard, one epoch after another
    (arranged by `arrange`: document groups, length buckets).

    Every worker draws the same number of micro-batches per step, so no rank waits for a
    collective that a peer with a shorter shard would never enter.
    """
    epoch = 0
    ray_shuffle = shuffle_buffer if not group_documents else 0  # groups are shuffled by `arrange`
    while True:
        produced = 0
        batches = (records_from_batch(batch, stage) for batch in shard.iter_batches(
            batch_size=micro_size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=ray_shuffle or None,
            local_shuffle_seed=seed + epoch if ray_shuffle else None,
        ))
        for records in arrange(batches, micro_size, shuffle_buffer, length_buckets, group_documents, seed + epoch):
            produced += 1
            yield records
        if produced == 0:
            raise ConfigError(f"a worker's data shard holds fewer than micro_size={micro_size} records")
        epoch += 1
