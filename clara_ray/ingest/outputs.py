"""Training records from chunks + synthesis results + negatives (docs/design.md section 6).

Every record is validated with `clara_ray.data.records.parse_record` before it is written, and
every file is written whole (temp + rename).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from clara_ray.data.records import parse_record, write_jsonl
from clara_ray.ingest.hashing import content_key

PRETRAIN, INSTRUCT, END_TO_END = "pretrain_data.jsonl", "instruction_data.jsonl", "end_to_end_data.jsonl"
RAW, ERRORS = "raw_knowledge.jsonl", "errors.jsonl"


def _with_negatives(gold: str, negatives: list[str], size: int, rng: random.Random) -> tuple[list[str], int]:
    docs = [gold] + negatives[:max(0, size - 1)]
    rng.shuffle(docs)
    return docs, docs.index(gold)


def build_records(chunks: list[dict[str, Any]], synthesis: dict[str, dict[str, Any]],
                  negatives: dict[str, list[str]], instruct_docs: int, end_to_end_docs: int,
                  seed: int) -> dict[str, list[dict[str, Any]]]:
    """chunks: ordered rows (key, text, source, ...); synthesis: chunk key -> result row."""
    text_of = {c["key"]: c["text"] for c in chunks}
    records: dict[str, list[dict[str, Any]]] = {PRETRAIN: [], INSTRUCT: [], END_TO_END: []}
    for chunk in chunks:
        result = synthesis.get(chunk["key"])
        if not result or result["status"] != "ok":
            continue
        text, pairs = chunk["text"], json.loads(result["qa"])
        records[PRETRAIN].append({"data_type": "paraphrase", "question": [], "answers": [result["summary"]],
                                  "docs": [text]})
        records[PRETRAIN].append({"data_type": "qa", "question": [p["question"] for p in pairs],
                                  "answers": [p["answer"] for p in pairs], "docs": [text]})
        others = [text_of[k] for k in negatives.get(chunk["key"], [])]
        for number, pair in enumerate(pairs):
            # Seeded per question, so order is stable across reruns yet differs between questions.
            rng = random.Random(content_key(seed, chunk["key"], number))
            docs, _ = _with_negatives(text, others, instruct_docs, rng)
            records[INSTRUCT].append({"question": pair["question"], "docs": docs, "answer": pair["answer"]})
            docs, gold = _with_negatives(text, others, end_to_end_docs, rng)
            records[END_TO_END].append({"question": pair["question"], "docs": docs,
                                        "answers": [pair["answer"]], "pos_index": [gold]})
    return records


STAGE_OF = {PRETRAIN: "compress_pretrain", INSTRUCT: "instruct", END_TO_END: "end_to_end"}


def write_records(out_dir: Path, records: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    counts = {}
    for name, rows in records.items():
        for line, row in enumerate(rows, start=1):
            parse_record(row, STAGE_OF[name], str(out_dir / name), line)  # raises naming the line
        counts[name] = write_jsonl(out_dir / name, rows)
    return counts


def raw_knowledge_rows(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": c["key"], "source": c["source"], "chunk_index": c["index"], "text": c["text"]} for c in chunks]
