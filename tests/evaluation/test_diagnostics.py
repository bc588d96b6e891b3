"""Reconstruction scores computed by hand, and reconstruction on the tiny model."""
import pytest

from clara_ray.evaluation.diagnostics import (
    EXAMPLES,
    copied_by_position,
    copied_words,
    held_out_paragraphs,
    longest_shared_run,
    reconstruct,
    rouge_l_f1,
    summarise_reconstruction,
)
from clara_ray.evaluation.loaders import EvalQuestion

TEXT = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy."


def test_identical_text_scores_full_marks():
    words = len("normans were people who in 10th and 11th centuries gave their name to normandy".split())
    assert rouge_l_f1(TEXT, TEXT) == 1.0
    assert longest_shared_run(TEXT, TEXT) == words == 14


def test_partial_reconstruction_scores():
    reference, candidate = "a b c d e f", "b c x e f b"
    # normalised words [b c d e f] vs [b c x e f b]: LCS b c e f = 4, P = 4/6, R = 4/5
    assert rouge_l_f1(reference, candidate) == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert longest_shared_run(reference, candidate) == 2  # "b c" (or "e f")
    assert longest_shared_run("The Normans!", "normans") == 1  # after SQuAD normalisation
    assert rouge_l_f1(TEXT, "") == 0.0 and longest_shared_run(TEXT, "") == 0


def test_copied_words_by_position_count_shared_runs_of_two_or_more_words():
    reference = " ".join(f"w{i}" for i in range(40))
    candidate = "W0 w1 x w3 w31, w32 w33"  # "w3" alone is not counted as copied
    assert copied_words(reference, candidate) == {0, 1, 31, 32, 33}
    assert copied_words(reference, "") == set() and copied_words("The Normans.", "normans") == set()
    results = [{"reference": reference, "reconstruction": candidate}, {"reference": "w0 w1", "reconstruction": "w0 w1"}]
    assert copied_by_position(results) == {"0-29": pytest.approx(4 / 32), "30-59": pytest.approx(3 / 10)}


def test_held_out_paragraphs_are_distinct_golds_in_question_order():
    docs = ["p0", "p1", "p2"]
    questions = [EvalQuestion(id=str(i), dataset="t", question="q", answers=["a"], docs=docs, pos_index=pos)
                 for i, pos in enumerate([[2], [2], [0, 1]])]
    assert held_out_paragraphs(questions, 2) == ["p2", "p0"]
    assert held_out_paragraphs(questions, 10) == ["p2", "p0", "p1"]


def test_reconstruct_on_tiny_model_cuts_reference_to_doc_max_length(tiny_model):
    long_paragraph = " ".join(f"word{i}" for i in range(100))
    results = reconstruct(tiny_model, [TEXT, long_paragraph], batch_size=1)
    assert [r["reference"] for r in results][0] == TEXT  # short: whole
    cut = results[1]["reference"]
    assert long_paragraph.startswith(cut) and len(tiny_model.tokenizer(cut, add_special_tokens=False)["input_ids"]) \
        == tiny_model.config.doc_max_length
    assert [r["reconstruction"] for r in results] == tiny_model.generate_from_paraphrase(
        [TEXT, long_paragraph], max_new_tokens=tiny_model.config.doc_max_length + 16)
    for r in results:
        assert r["rouge_l_f1"] == rouge_l_f1(r["reference"], r["reconstruction"])
    summary = summarise_reconstruction(results)
    assert summary["n"] == 2 and len(summary["examples"]) == min(2, EXAMPLES)
    assert summary["rouge_l_f1_mean"] == pytest.approx(sum(r["rouge_l_f1"] for r in results) / 2)
    assert summary["copied_by_position"] == copied_by_position(results) and "0-29" in summary["copied_by_position"]
    assert summary["examples"][0]["paragraph"].startswith("The Normans were")
