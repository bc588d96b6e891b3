"""Where each answer sits in its gold document, and the scores grouped by that place.

A compressor that keeps only the start of a document shows it here: answers near the start come
out of the memory, answers further in do not, while closed-book F1 (no memory) stays level.
Positions count SQuAD-normalised words (`metrics.normalize_answer`) before the first occurrence
of any gold answer in any gold document, so they need no character offsets and work for every
dataset the loaders read. A question whose answers occur in no gold document is put in a group
of its own; one without a gold document has no position at all.
"""
from __future__ import annotations

from typing import Any, Sequence

from clara_ray.evaluation.loaders import EvalQuestion
from clara_ray.evaluation.metrics import RETRIEVAL_KS, mean_scores, normalize_answer

BIN_STARTS = (0, 30, 60, 100)  # words; the last group runs to the document's end
NOT_FOUND = "not found"
RECALL = f"recall@{max(RETRIEVAL_KS)}"  # the Recall@k kept per group


def _first_run(words: list[str], run: list[str]) -> int | None:
    for i in range(len(words) - len(run) + 1):
        if words[i:i + len(run)] == run:
            return i
    return None


def answer_word(golds: Sequence[str], answers: Sequence[str]) -> int | None:
    """Normalised words before the earliest occurrence of any answer in any gold document."""
    runs = [run for a in answers if (run := normalize_answer(a).split())]
    found = [at for doc in golds for run in runs if (at := _first_run(normalize_answer(doc).split(), run)) is not None]
    return min(found, default=None)


def answer_position(q: EvalQuestion) -> dict[str, int | None]:
    """A row's `answer_word` field: the question's answer position, none without a gold document."""
    return {"answer_word": answer_word([q.docs[i] for i in q.pos_index], q.answers)} if q.pos_index else {}


def position_group(word: int | None) -> str:
    """The group label of a position: "0-29", ..., "100+", or NOT_FOUND."""
    if word is None:
        return NOT_FOUND
    start = max(s for s in BIN_STARTS if s <= word)
    ends = dict(zip(BIN_STARTS, BIN_STARTS[1:]))
    return f"{start}-{ends[start] - 1}" if start in ends else f"{start}+"


GROUPS = tuple(position_group(start) for start in BIN_STARTS)  # in order, NOT_FOUND aside


def by_answer_position(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per position group (in order): n, mean F1 of every system/setting, mean Recall@k of every
    retriever at the largest k, and the mean answer CE gap (other - own memory, nats per token)
    where the answer-loss diagnostic ran. Rows without an `answer_word` field or with neither
    answers nor rankings (a reconstruction-only evaluation) are left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "answer_word" in row and (row["systems"] or row["retrieval"]):
            groups.setdefault(position_group(row["answer_word"]), []).append(row)
    out = []
    for label in (g for g in (*GROUPS, NOT_FOUND) if g in groups):
        members = groups[label]
        gaps = [d["answer_ce_other"] - d["answer_ce_own"] for row in members if (d := row.get("diagnostics"))]
        out.append({
            "words": label, "n": len(members),
            "f1": mean_scores({key: s["f1"] for key, s in row["systems"].items()} for row in members),
            RECALL: mean_scores({name: r[RECALL] for name, r in row["retrieval"].items() if RECALL in r}
                                for row in members),
            "answer_ce_gap": sum(gaps) / len(gaps) if gaps else None,
        })
    return out
