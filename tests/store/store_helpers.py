"""Helpers shared by the store tests (imported by name: tests/ has no packages)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clara_ray.store import CheckpointIdentity, DocRecord

SHAPE = (4, 32)


def identity(fingerprint: str = "a" * 64) -> CheckpointIdentity:
    return CheckpointIdentity(fingerprint=fingerprint, backbone="tiny-random", compression_rate=8,
                              num_memory_tokens=SHAPE[0], hidden_size=SHAPE[1], path="/ckpt")


def docs_for(start: int, count: int) -> list[DocRecord]:
    return [DocRecord(id=f"doc-{i}", text=f"text {i}", source=f"src-{i % 3}", chunk=i % 5)
            for i in range(start, start + count)]


def same_top(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of queries whose top-k sets agree."""
    return float(np.mean([set(x) == set(y) for x, y in zip(a, b)]))


def write_corpus(path: Path, start: int, count: int) -> list[str]:
    """A JSONL corpus of documents d<start>..d<start+count-1>; returns their texts."""
    texts = [f"Document {i}: the {['red', 'blue', 'green'][i % 3]} river flows past town {i * 7}." for i in range(start, start + count)]
    with path.open("w") as fh:
        for i, text in zip(range(start, start + count), texts):
            fh.write(json.dumps({"id": f"d{i}", "text": text, "source": "rivers.txt", "chunk": i}) + "\n")
    return texts
