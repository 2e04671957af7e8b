"""Entity-level scores of tag sequences, with conlleval's semantics (seqeval's default mode).

A tag is `O` or `<prefix>-<type>` with the prefix one of B, I (IOB1, IOB2), E, S (IOBES). An
entity is a maximal run of tags of one type that no boundary splits; the rules are conlleval's,
extended to E and S as seqeval extends them, and they read every scheme and every malformed
sequence the same way (an `I-` after `O` or after another type opens an entity, as in IOB1):

* an entity ends after a tag E or S; after B or I when the next tag is B, S or O; and wherever
  the type changes;
* an entity starts at B or S; at I or E after O, E or S; and wherever the type changes.

Precision, recall and F1 are over exact matches of (type, first token, last token); micro over
all types and per type. Token accuracy counts tags equal to the gold ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type) of a tag: ('O', '') for O."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The (type, first, last) entities of one sentence's tags, last inclusive."""
    found = []
    start, prev_prefix, prev_kind = None, "O", ""
    for i, tag in enumerate([*tags, "O"]):  # the final O closes an entity open at the end
        prefix, kind = split_tag(tag)
        ends = (
            prev_prefix in "ES"
            or (prev_prefix in "BI" and prefix in "BSO")
            or (prev_prefix != "O" and prev_kind != kind)
        )
        if start is not None and ends:
            found.append((prev_kind, start, i - 1))
            start = None
        starts = prefix in "BS" or (prefix in "IE" and prev_prefix in "OES") or (prefix != "O" and prev_kind != kind)
        if starts:
            start = i
        prev_prefix, prev_kind = prefix, kind
    return found


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 over entities, token accuracy, and `f1_<type>` for each type."""
    correct: Counter[str] = Counter()
    n_predicted: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    right_tokens = total_tokens = 0
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"a sentence has {len(gold_tags)} gold tags and {len(predicted_tags)} predicted")
        right_tokens += sum(g == p for g, p in zip(gold_tags, predicted_tags))
        total_tokens += len(gold_tags)
        gold_entities, predicted_entities = set(entities(gold_tags)), set(entities(predicted_tags))
        for kind, *_ in gold_entities:
            n_gold[kind] += 1
        for kind, *_ in predicted_entities:
            n_predicted[kind] += 1
        for kind, *_ in gold_entities & predicted_entities:
            correct[kind] += 1
    result = _prf(sum(correct.values()), sum(n_predicted.values()), sum(n_gold.values()))
    result["accuracy"] = right_tokens / total_tokens if total_tokens else 0.0
    for kind in sorted(n_gold.keys() | n_predicted.keys()):
        result[f"f1_{kind}"] = _prf(correct[kind], n_predicted[kind], n_gold[kind])["f1"]
    return result
