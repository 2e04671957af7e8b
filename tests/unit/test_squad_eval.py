"""SQuAD metrics as the official v1.1 and v2.0 scripts define them, on cases worked by hand."""

import pytest

from bertjax.tasks import squad_eval


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The  Quick, brown-fox!", "quick brownfox"),  # punctuation goes before the articles
        ("an apple a day", "apple day"),
        ("theatre and anthem", "theatre and anthem"),  # articles only as whole words
        ("A.B.C.", "abc"),
        ("  Ça   va\n", "ça va"),
        ("the", ""),
        ("“quoted”", "“quoted”"),  # only ASCII punctuation is removed
    ],
)
def test_normalisation(text, normalised):
    assert squad_eval.normalize_answer(text) == normalised


def test_f1_is_over_the_bag_of_normalised_words():
    # [cat, sat, on, mat] against [cat, on, mat]: 3 shared, precision 3/4, recall 1.
    assert squad_eval.f1("the cat sat on the mat", "cat on mat") == pytest.approx(2 * 0.75 / 1.75)
    assert squad_eval.f1("cat cat", "cat") == pytest.approx(2 * 0.5 / 1.5)  # counts, not sets
    assert squad_eval.f1("dog", "cat") == 0.0


def test_v1_scores_the_best_gold_answer_and_a_missing_prediction_as_zero():
    gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["cat on mat"], "q3": ["x"]}
    predictions = {"q1": "the Broncos", "q2": "cat sat"}  # q3 unanswered
    # q1: EM 1, F1 1. q2: [cat, sat] vs [cat, on, mat]: P 1/2, R 1/3, F1 0.4. q3: 0.
    result = squad_eval.evaluate(gold, predictions)
    assert result == {"exact": pytest.approx(100 / 3), "f1": pytest.approx(140 / 3)}


def test_v1_and_v2_differ_on_an_answer_that_normalises_to_nothing():
    # v1.1: gold "the" and prediction "a" both normalise to "": exact match 1, F1 0 (no shared word).
    assert squad_eval.evaluate({"q": ["the"]}, {"q": "a"}) == {"exact": 100.0, "f1": 0.0}


def test_v2_has_and_no_answer_scores_and_the_best_threshold():
    gold = {"q1": ["Broncos"], "q2": [], "q3": ["cat on mat"], "q4": []}
    predictions = {"q1": "Broncos", "q2": "", "q3": "", "q4": "dog"}
    odds = {"q1": -2.0, "q2": 1.0, "q3": 3.0, "q4": -1.0}
    result = squad_eval.evaluate(gold, predictions, odds)
    # Right: q1 (span), q2 (no answer). Wrong: q3 (answered nothing), q4 (answered an unanswerable).
    assert result["exact"] == 50.0 and result["f1"] == 50.0
    assert result["HasAns_exact"] == 50.0 and result["NoAns_exact"] == 50.0
    assert result["HasAns_total"] == 2 and result["NoAns_total"] == 2
    # Thresholds, by rising odds: all "no answer" = 2 right; answering q1 (odds -2) makes 3;
    # then q4 (-1) costs one, q2 (1) changes nothing, q3 (3) is answered "" anyway: best 3/4 at -2.
    assert result["best_exact"] == 75.0 and result["best_exact_thresh"] == -2.0
    assert result["best_f1"] == 75.0 and result["best_f1_thresh"] == -2.0
