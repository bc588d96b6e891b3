"""Stage-1 reconstruction quality: does a paragraph come back out of its memory tokens?

The generator reconstructs each held-out gold paragraph from its compressed memory (greedy,
the inference paraphrase prompt); the reference is the paragraph cut to the model's
doc_max_length tokens, all the compressor saw. Both sides are compared as words after the SQuAD
normalisation of `metrics.normalize_answer`:
- longest shared word run (difflib's longest matching block): copying, not just topic words;
- ROUGE-L F1 (longest common subsequence of words; Lin 2004, no stemming);
- by position: the share of the reference's words, per position group (`positions`), that the
  reconstruction copies in a shared run of at least COPIED_RUN words: which part of a paragraph
  its memory keeps.
"""
from __future__ import annotations

from collections import Counter
from difflib import SequenceMatcher
from typing import Any, Sequence

from clara_ray.evaluation.loaders import EvalQuestion
from clara_ray.evaluation.metrics import normalize_answer
from clara_ray.evaluation.positions import GROUPS, position_group

EXAMPLES = 3  # reconstructions quoted in summary.json and the report
EXAMPLE_WORDS = 25
NEW_TOKEN_SLACK = 16  # a reconstruction may tokenise a little longer than its source
COPIED_RUN = 2  # words: a shared run this long counts as copied (one shared word is often a topic word)


def _words(text: str) -> list[str]:
    return normalize_answer(text).split()


def longest_shared_run(reference: str, candidate: str) -> int:
    """Length in words of the longest word sequence both texts contain."""
    a, b = _words(reference), _words(candidate)
    # autojunk off: it would drop words frequent in long texts from the match
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def copied_words(reference: str, candidate: str) -> set[int]:
    """Positions of the reference's words inside a run of >= COPIED_RUN words the candidate shares
    (difflib's matching blocks: one non-crossing alignment, longest runs first)."""
    a, b = _words(reference), _words(candidate)
    blocks = SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    return {i for block in blocks if block.size >= COPIED_RUN for i in range(block.a, block.a + block.size)}


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(reference: str, candidate: str) -> float:
    a, b = _words(reference), _words(candidate)
    common = _lcs_length(a, b) if a and b else 0
    if common == 0:
        return 0.0
    precision, recall = common / len(b), common / len(a)
    return 2 * precision * recall / (precision + recall)


def held_out_paragraphs(questions: Sequence[EvalQuestion], n: int) -> list[str]:
    """The first `n` distinct gold documents of the questions, in question order."""
    golds = dict.fromkeys(q.docs[i] for q in questions for i in q.pos_index)
    return list(golds)[:n]


def cut_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """The text as the compressor reads it: its first `max_tokens` tokens."""
    ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True)


def reconstruct(model, paragraphs: Sequence[str], batch_size: int) -> list[dict[str, Any]]:
    """Per paragraph: reference (cut), greedy reconstruction and its two scores."""
    limit = model.config.doc_max_length
    results = []
    for start in range(0, len(paragraphs), batch_size):
        batch = list(paragraphs[start:start + batch_size])
        outputs = model.generate_from_paraphrase(batch, max_new_tokens=limit + NEW_TOKEN_SLACK)
        for paragraph, output in zip(batch, outputs):
            reference = cut_to_tokens(model.tokenizer, paragraph, limit)
            results.append({"reference": reference, "reconstruction": output,
                            "longest_run_words": longest_shared_run(reference, output),
                            "rouge_l_f1": rouge_l_f1(reference, output)})
    return results


def _start(text: str) -> str:
    words = text.split()
    return " ".join(words[:EXAMPLE_WORDS]) + (" ..." if len(words) > EXAMPLE_WORDS else "")


def copied_by_position(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per position group of the references' words: the share the reconstructions copy."""
    copied, total = Counter(), Counter()
    for r in results:
        kept = copied_words(r["reference"], r["reconstruction"])
        for i in range(len(_words(r["reference"]))):
            total[position_group(i)] += 1
            copied[position_group(i)] += i in kept
    return {group: copied[group] / total[group] for group in GROUPS if group in total}


def summarise_reconstruction(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    return {
        "n": n,
        "longest_run_words_mean": sum(r["longest_run_words"] for r in results) / n if n else None,
        "rouge_l_f1_mean": sum(r["rouge_l_f1"] for r in results) / n if n else None,
        "copied_by_position": copied_by_position(results),
        "examples": [{"paragraph": _start(r["reference"]), "reconstruction": _start(r["reconstruction"])}
                     for r in results[:EXAMPLES]],
    }
