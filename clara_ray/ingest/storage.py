"""Crash-safe ingest outputs: tables and per-stage Parquet parts keyed by content hash.

Each stage appends parts `<out>/work/<stage>/part-<hash>.parquet` as results stream back to the
driver; a part appears whole or not at all (temp file + rename), so after kill -9 a rerun reads
the finished keys and only submits the rest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clara_ray.atomic import write_atomic
from clara_ray.ingest.hashing import content_key


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    write_atomic(path, sink.getvalue().to_pybytes())


class StageParts:
    """The cached results of one stage: rows with a unique `key` column."""

    def __init__(self, work_dir: Path, stage: str):
        self.dir = Path(work_dir) / stage

    def add(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            name = content_key(sorted(r["key"] for r in rows))[:24]
            write_table(self.dir / f"part-{name}.parquet", rows)

    def rows(self) -> dict[str, dict[str, Any]]:
        """key -> row over all parts (a key met twice keeps its first part, in name order)."""
        found: dict[str, dict[str, Any]] = {}
        for part in sorted(self.dir.glob("part-*.parquet")):
            for row in pq.read_table(part).to_pylist():
                found.setdefault(row["key"], row)
        return found


def to_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts -> the column dict a Ray Data `map_batches` function returns."""
    return {name: [row[name] for row in rows] for name in rows[0]} if rows else {}
