"""SQuAD's metrics as the official evaluation scripts (v1.1 and v2.0) define them.

An answer is normalised (lower case; punctuation, the articles a/an/the and extra whitespace
removed) before it is compared. Exact match is 1 when the normalised prediction equals a
normalised gold answer; F1 is over the bag of normalised words. Each question scores its best
gold answer; the split's score is the mean, in percent.

v2.0 adds unanswerable questions: their gold answer is the empty string, and an empty
prediction is "no answer". Scores are also given over the answerable (`HasAns_*`) and the
unanswerable (`NoAns_*`) questions, and, from each question's no-answer odds, the best score
any threshold on those odds reaches (`best_exact`, `best_f1`) with that threshold.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles removed, whitespace collapsed (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Word-overlap F1 of the normalised answers. When either is empty it is 0 (v1.1), or 1 if
    both are and else 0 (v2.0)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and (not predicted or not expected):
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _gold_answers(answers: Sequence[str], version_2: bool) -> list[str]:
    """v1.1: every gold answer. v2.0: those that normalise to something, or [''] (unanswerable)."""
    if not version_2:
        return list(answers)
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def _best_threshold(
    raw: Mapping[str, float], predictions: Mapping[str, str], no_answer_odds: Mapping[str, float], has_answer: set[str]
) -> tuple[float, float]:
    """The best score (percent) over thresholds on the no-answer odds, and that threshold: questions
    are taken in order of rising odds, each answered (its raw score) or left unanswered."""
    score = best = sum(1 for qid in raw if qid not in has_answer)
    threshold = 0.0
    for qid in sorted(raw, key=lambda q: no_answer_odds[q]):
        if qid in has_answer:
            score += raw[qid]
        elif predictions[qid]:
            score -= 1
        if score > best:
            best, threshold = score, no_answer_odds[qid]
    return 100.0 * best / len(raw), threshold


def evaluate(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    no_answer_odds: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """`exact` and `f1` (percent) of `predictions` (question id -> answer text) against `gold`
    (question id -> answer texts; empty for an unanswerable question). A question without a
    prediction scores 0. With any unanswerable question, or with `no_answer_odds` (question id ->
    null score minus best span score), the scoring is v2.0's and its scores are added. `exact` and
    `f1` score the predictions as given (their "no answer"s decided by the caller)."""
    if not gold:
        return {"exact": 0.0, "f1": 0.0}
    version_2 = no_answer_odds is not None or any(not g for g in gold.values())
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        prediction, answers = predictions.get(qid, ""), _gold_answers(answers, version_2)
        exact_raw[qid] = max(exact_match(prediction, a) for a in answers)
        f1_raw[qid] = max(f1(prediction, a, version_2) for a in answers)
    result = {
        "exact": 100.0 * sum(exact_raw.values()) / len(gold),
        "f1": 100.0 * sum(f1_raw.values()) / len(gold),
    }
    if not version_2:
        return result
    has_answer = {qid for qid, g in gold.items() if any(normalize_answer(a) for a in g)}
    for name, subset in (("HasAns", has_answer), ("NoAns", set(gold) - has_answer)):
        if subset:
            result[f"{name}_exact"] = 100.0 * sum(exact_raw[q] for q in subset) / len(subset)
            result[f"{name}_f1"] = 100.0 * sum(f1_raw[q] for q in subset) / len(subset)
            result[f"{name}_total"] = float(len(subset))
    odds = no_answer_odds or {}
    odds = {qid: odds.get(qid, 0.0) for qid in gold}
    filled = {qid: predictions.get(qid, "") for qid in gold}
    result["best_exact"], result["best_exact_thresh"] = _best_threshold(exact_raw, filled, odds, has_answer)
    result["best_f1"], result["best_f1_thresh"] = _best_threshold(f1_raw, filled, odds, has_answer)
    return result
