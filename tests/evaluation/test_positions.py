"""Answer positions in gold documents and the scores grouped by them, on hand-made rows."""
import pytest

from clara_ray.evaluation.positions import NOT_FOUND, answer_word, by_answer_position, position_group

DOC = "The Normans were the people who, in the 10th and 11th centuries, gave their name to Normandy."


def test_answer_word_counts_normalised_words_before_the_earliest_answer():
    # normalised: normans were people who in 10th and 11th centuries gave their name to normandy
    assert answer_word([DOC], ["Normandy"]) == 13
    assert answer_word([DOC], ["10th and 11th centuries", "Normandy"]) == 5  # the earliest answer wins
    assert answer_word([DOC], ["The 10TH and 11th Centuries!"]) == 5  # case, articles, punctuation
    assert answer_word(["Nothing here.", DOC], ["normans"]) == 0  # any gold document
    assert answer_word([DOC], ["name to Norway"]) is None  # the whole answer must occur, in order
    assert answer_word([DOC], ["the", "gave"]) == 9  # an answer empty once normalised matches nothing
    assert answer_word([], ["Normandy"]) is None


@pytest.mark.parametrize("word, group", [(0, "0-29"), (29, "0-29"), (30, "30-59"), (59, "30-59"), (60, "60-99"),
                                         (99, "60-99"), (100, "100+"), (512, "100+"), (None, NOT_FOUND)])
def test_position_groups(word, group):
    assert position_group(word) == group


def _row(word, f1, recall=None, ce=None, **extra):
    row = {"systems": {"clara/oracle": {"f1": f1[0]}, "clara/wrong_memory": {"f1": f1[1]}},
           "retrieval": {"clara": {"recall@5": recall} if recall is not None else {}}, **extra}
    if word != "absent":
        row["answer_word"] = word
    if ce is not None:
        row["diagnostics"] = {"answer_ce_own": ce[0], "answer_ce_other": ce[1]}
    return row


def test_scores_by_answer_position():
    rows = [_row(120, (0.0, 0.0), recall=0.0, ce=(3.0, 3.0)), _row(3, (1.0, 0.0), recall=1.0, ce=(1.0, 2.5)),
            _row(None, (0.5, 0.5)), _row(10, (0.5, 0.25), recall=0.0, ce=(2.0, 2.5)),
            _row("absent", (1.0, 1.0), recall=1.0)]  # a row from before positions were kept: left out
    groups = by_answer_position(rows)
    assert [(g["words"], g["n"]) for g in groups] == [("0-29", 2), ("100+", 1), (NOT_FOUND, 1)]
    first = groups[0]
    assert first["f1"] == {"clara/oracle": pytest.approx(0.75), "clara/wrong_memory": pytest.approx(0.125)}
    assert first["recall@5"] == {"clara": pytest.approx(0.5)}
    assert first["answer_ce_gap"] == pytest.approx((1.5 + 0.5) / 2)
    assert groups[1]["answer_ce_gap"] == 0.0 and groups[1]["recall@5"] == {"clara": 0.0}
    assert groups[2]["answer_ce_gap"] is None and groups[2]["recall@5"] == {}  # no CE measured, no gold ranked
    assert by_answer_position([_row("absent", (1.0, 0.0))]) == []
    assert by_answer_position([{"answer_word": 3, "systems": {}, "retrieval": {}}]) == []  # nothing scored
