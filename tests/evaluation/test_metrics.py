"""Metric values computed by hand from docs/design.md section 8's definitions."""
import pytest

from clara_ray.evaluation.metrics import (
    answer_scores,
    cover_exact_match,
    exact_match,
    f1_score,
    mean_scores,
    paired_difference,
    normalize_answer,
    retrieval_scores,
)


def test_normalisation_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("The  Cat, sat!  on A mat.") == "cat sat on mat"
    assert normalize_answer("an apple-pie") == "applepie"


def test_em_and_cover_em():
    assert exact_match("The Denver Broncos!", "denver broncos") == 1.0
    assert exact_match("Denver Broncos won", "Denver Broncos") == 0.0
    # cover-EM: every gold token in the prediction, order and extra words ignored
    assert cover_exact_match("Broncos of Denver won", "The Denver Broncos") == 1.0
    assert cover_exact_match("Broncos", "Denver Broncos") == 0.0


def test_f1_token_overlap():
    # pred tokens [cat, sat, on, mat], gold [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert f1_score("the cat sat on a mat", "cat on the mat") == pytest.approx(6 / 7)
    # [denver, broncos, won] vs [denver, broncos]: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    assert f1_score("Paris", "London") == 0.0


def test_f1_yes_no_rule():
    assert f1_score("yes", "no") == 0.0
    assert f1_score("No.", "no") == 1.0
    # plain token F1 would give P = 1/3, R = 1 -> 0.5; the yes/no rule forces 0
    assert f1_score("yes it is", "yes") == 0.0
    assert f1_score("noanswer", "no answer") == 0.0


def test_multi_answer_takes_each_metrics_max():
    golds = ["Carolina Panthers team", "Panthers"]
    scores = answer_scores("Panthers of Carolina", golds)
    # acc: gold 1 misses "team" (0), gold 2 covered (1) -> 1
    # f1: gold 1 common 2 of 3/3 -> 2/3; gold 2 P = 1/3, R = 1 -> 0.5; max 2/3 (from gold 1)
    assert scores == pytest.approx({"acc": 1.0, "em": 0.0, "f1": 2 / 3})
    assert answer_scores("the Panthers", golds)["em"] == 1.0
    with pytest.raises(ValueError):
        answer_scores("x", [])


def test_recall_and_precision_at_k():
    scores = retrieval_scores([4, 2, 0, 7, 1], gold=[2, 1])
    assert scores == pytest.approx({
        "recall@1": 0.0, "precision@1": 0.0,
        "recall@3": 0.5, "precision@3": 1 / 3,
        "recall@5": 1.0, "precision@5": 0.4,
    })
    assert retrieval_scores([0, 1], gold=[]) == {}


def test_mean_scores_skips_missing_metrics():
    assert mean_scores([{"f1": 1.0, "recall@1": 0.0}, {"f1": 0.5}]) == {"f1": 0.75, "recall@1": 0.0}


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    # differences 0.5, -0.25, 1.0: mean 0.41667, sample sd 0.62915, se = sd / sqrt(3) = 0.36324
    result = paired_difference([(1.0, 0.5), (0.25, 0.5), (2.0, 1.0)])
    assert result["n"] == 3
    assert result["mean"] == pytest.approx(0.416667, abs=1e-5)
    assert result["se"] == pytest.approx(0.363242, abs=1e-5)
    assert paired_difference([(3.0, 1.0)]) == {"mean": 2.0, "se": None, "n": 1}
    with pytest.raises(ValueError, match="at least one pair"):
        paired_difference([])
