"""Answer and retrieval metrics exactly as docs/design.md section 8 (the reference's QA evaluation).

Answer metrics compare one prediction with every gold answer and keep the best score:
- `acc` (cover-EM): every normalised gold token occurs among the normalised prediction tokens;
- `em`: normalised strings are equal;
- `f1`: SQuAD token F1, forced to 0 when either side is yes/no/noanswer and the two differ
  (a "yes" must not earn partial credit against "no").
Retrieval metrics take a ranked list of candidate indices and the gold indices.
"""
from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter
from typing import Iterable, Mapping, Sequence

RETRIEVAL_KS: tuple[int, ...] = (1, 3, 5)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_SPECIAL_ANSWERS = {"yes", "no", "noanswer"}


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace (SQuAD's order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def cover_exact_match(prediction: str, gold: str) -> float:
    predicted = set(normalize_answer(prediction).split())
    return float(all(token in predicted for token in normalize_answer(gold).split()))


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL_ANSWERS or ref in _SPECIAL_ANSWERS) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def answer_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """Best acc / em / f1 over the gold answers (each metric maximised independently)."""
    if not golds:
        raise ValueError("answer_scores needs at least one gold answer")
    return {
        "acc": max(cover_exact_match(prediction, g) for g in golds),
        "em": max(exact_match(prediction, g) for g in golds),
        "f1": max(f1_score(prediction, g) for g in golds),
    }


def retrieval_scores(ranked: Sequence[int], gold: Iterable[int], ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, float]:
    """Recall@k = |gold ∩ top-k| / |gold| and Precision@k = hits / k; empty if there is no gold."""
    gold_set = set(gold)
    if not gold_set:
        return {}
    scores: dict[str, float] = {}
    for k in ks:
        hits = len(gold_set.intersection(ranked[:k]))
        scores[f"recall@{k}"] = hits / len(gold_set)
        scores[f"precision@{k}"] = hits / k
    return scores


def mean_scores(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over the rows that report it (questions without gold skip retrieval)."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for name, value in row.items():
            totals[name] = totals.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
    return {name: totals[name] / counts[name] for name in totals}


def paired_difference(pairs: Iterable[tuple[float, float]]) -> dict[str, float | None]:
    """Mean of a - b over paired measurements (one question scored two ways) and its standard
    error (sample standard deviation / sqrt(n); None from a single pair)."""
    differences = [float(a) - float(b) for a, b in pairs]
    if not differences:
        raise ValueError("paired_difference needs at least one pair")
    n = len(differences)
    se = statistics.stdev(differences) / math.sqrt(n) if n > 1 else None
    return {"mean": statistics.fmean(differences), "se": se, "n": n}
