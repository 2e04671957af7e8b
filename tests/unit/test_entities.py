"""Entity-level tagging scores: hand-worked cases under conlleval's rules, and equality with
seqeval's default mode on random and malformed sequences of each scheme."""

import numpy as np
import pytest
from seqeval import metrics as seqeval

from bertjax.tasks import entities


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),  # an I- without a B- opens an entity
        (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),  # a type change splits
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),
        (["I-PER", "I-PER", "B-PER", "O"], [("PER", 0, 1), ("PER", 2, 2)]),  # IOB1: B- only between same-type runs
        (["S-PER", "B-LOC", "E-LOC", "O", "B-ORG", "I-ORG"], [("PER", 0, 0), ("LOC", 1, 2), ("ORG", 4, 5)]),
        (["O", "E-PER", "I-PER", "E-PER"], [("PER", 1, 1), ("PER", 2, 3)]),  # IOBES: E closes, I after E opens
        (["B-MISC", "I-MISC", "I-MISC"], [("MISC", 0, 2)]),  # open at the end: closed there
        (["O", "O"], []),
    ],
)
def test_entities_follow_conlleval(tags, expected):
    assert entities.entities(tags) == expected


def test_scores_worked_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    # gold: PER(0-1) LOC(3) | ORG(0); predicted: PER(0-1) ORG(3) | ORG(0) (the I- opens one): 2 right.
    result = entities.scores(gold, predicted)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["f1_PER"] == 1.0 and result["f1_LOC"] == 0.0
    assert result["f1_ORG"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P 1/2 (one of two), R 1/1


def test_no_predicted_entity_scores_zero_not_nan():
    result = entities.scores([["B-PER", "O"]], [["O", "O"]])
    assert result["precision"] == 0.0 and result["recall"] == 0.0 and result["f1"] == 0.0


@pytest.mark.parametrize("prefixes", ["BI", "BIES"])
def test_scores_equal_seqeval_on_random_malformed_sequences(prefixes):
    """Random tags, most of them malformed (I- after O, E- without B-, type changes mid-entity)."""
    rng = np.random.default_rng(len(prefixes))
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC", "ORG")]

    def sentence(n):
        return [str(t) for t in rng.choice(tags, n, p=[0.4] + [0.6 / (len(tags) - 1)] * (len(tags) - 1))]

    gold = [sentence(int(rng.integers(1, 25))) for _ in range(300)]
    predicted = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in s] for s in gold]
    ours = entities.scores(gold, predicted)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, predicted), abs=1e-12)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, predicted), abs=1e-12)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, predicted), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(seqeval.accuracy_score(gold, predicted), abs=1e-12)
    report = seqeval.classification_report(gold, predicted, output_dict=True)
    for kind in ("PER", "LOC", "ORG"):
        assert ours[f"f1_{kind}"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
    assert 0.2 < ours["f1"] < 0.9  # neither trivial nor perfect
