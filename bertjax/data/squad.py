"""SQuAD-layout question answering data: reading, windows over long contexts, and decoding.

`read_file` reads the SQuAD JSON layout (v1.1, and v2.0 with `is_impossible`): articles of
paragraphs, each a `context` and its `qas` (`id`, `question`, `answers` of `text` and
`answer_start`). Every answer must be the context's text at its `answer_start` (the official
v1.1 train and dev files hold no exception); a missing field, a wrong type, a misplaced answer, a
repeated id or an unanswerable question outside v2.0 is a `DataError` naming the file and the
question id. A file without any `answers` is unlabelled (a file to predict).

`encode` tokenises each question (cut to `max_query_length` tokens) with its context into
`[CLS] question [SEP] context-window [SEP]` rows: a context too long for one row is cut into
windows that overlap by `doc_stride` tokens. Every context token keeps its character offsets, so
an answer found in any window is cut from the exact characters of the context. `decode` finds
each question's best spans over all its windows (Hugging Face's `run_qa` post-processing).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from bertjax import fileio
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.errors import ConfigError, DataError


@dataclasses.dataclass
class Question:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character start); empty: unanswerable (or unlabelled)
    is_impossible: bool = False


@dataclasses.dataclass
class Questions:
    """A split's questions, in file order."""

    questions: list[Question]
    source: str
    labelled: bool

    @property
    def labels(self) -> dict[str, list[str]] | None:
        """Question id -> gold answer texts, or None (unlabelled)."""
        if not self.labelled:
            return None
        return {q.id: [text for text, _ in q.answers] for q in self.questions}

    def __len__(self) -> int:
        return len(self.questions)


def _field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{where}: no {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise DataError(f"{where}: {key!r} is not {getattr(kind, '__name__', kind)}")
    return value


def read_file(path: str | Path, version_2_with_negative: bool = False) -> Questions:
    """The questions of a SQuAD-layout JSON file (see the module docstring)."""
    path = Path(path)
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"data file {path} {problem}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: not JSON ({e.msg})") from None
    questions: list[Question] = []
    seen: set[str] = set()
    labelled = None
    for a, article in enumerate(_field(record, "data", list, str(path))):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path} article {a}")):
            where = f"{path} article {a} paragraph {p}"
            context = _field(paragraph, "context", str, where)
            for qa in _field(paragraph, "qas", list, where):
                qid = _field(qa, "id", str, where)
                where_q = f"{path} question {qid}"
                if qid in seen:
                    raise DataError(f"{where_q}: the id is repeated")
                seen.add(qid)
                question = _field(qa, "question", str, where_q)
                impossible = bool(qa.get("is_impossible", False))
                if impossible and not version_2_with_negative:
                    raise DataError(
                        f"{where_q}: an unanswerable question (is_impossible), a SQuAD v2.0 file: "
                        "set task.version_2_with_negative=True"
                    )
                has_answers = "answers" in qa
                if labelled is None:
                    labelled = has_answers
                if has_answers != labelled:
                    raise DataError(
                        f"{where_q}: {'no' if labelled else 'an'} 'answers' list, unlike the questions before"
                    )
                answers = []
                for answer in qa.get("answers", []) if not impossible else []:
                    text = _field(answer, "text", str, where_q)
                    start = _field(answer, "answer_start", int, where_q)
                    if context[start : start + len(text)] != text:
                        raise DataError(
                            f"{where_q}: answer {text!r} is not the context's text at answer_start={start} "
                            f"({context[start : start + len(text)]!r})"
                        )
                    answers.append((text, start))
                if labelled and not answers and not impossible:
                    raise DataError(f"{where_q}: no answer, and not marked is_impossible")
                questions.append(Question(qid, question, context, answers, impossible))
    if not questions:
        raise DataError(f"{path} holds no questions")
    return Questions(questions, str(path), bool(labelled))


@dataclasses.dataclass
class Windows:
    """A split's model rows: one per window of a question's context."""

    input_ids: np.ndarray  # [windows, length] int32
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    start_positions: np.ndarray  # [windows]: the answer's first token, or 0 ([CLS]) when not in the window
    end_positions: np.ndarray
    question_index: np.ndarray  # [windows]: which question
    context_start: np.ndarray  # [windows]: the window's first context token
    context_end: np.ndarray  # [windows]: its last context token
    offsets: np.ndarray | None  # [windows, length, 2]: a context token's characters; -1 elsewhere


def _cut_questions(questions: list[Question], tokenizer: tokenizers.Tokenizer, max_query_length: int) -> list[str]:
    """Each question cut after its first `max_query_length` tokens."""
    encodings = tokenizer.encode_batch([q.question for q in questions], add_special_tokens=False)
    return [
        q.question[: e.offsets[max_query_length - 1][1]] if len(e.ids) > max_query_length else q.question
        for q, e in zip(questions, encodings)
    ]


def encode(
    questions: Questions,
    tokenizer: tokenizers.Tokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    keep_offsets: bool = True,
) -> Windows:
    """The windows of every question (see the module docstring)."""
    specials = tokenizer.num_special_tokens_to_add(is_pair=True)  # BERT's 3, RoBERTa's 4
    if doc_stride >= max_seq_length - max_query_length - specials:
        raise ConfigError(
            f"config key task.doc_stride={doc_stride} must be below the context's share of a window, "
            f"task.max_seq_length - task.max_query_length - {specials} special tokens = "
            f"{max_seq_length - max_query_length - specials}"
        )
    texts = _cut_questions(questions.questions, tokenizer, max_query_length)
    tokenizer.enable_truncation(max_seq_length, stride=doc_stride, strategy="only_second")
    tokenizer_lib.pad_to(tokenizer, max_seq_length)
    try:
        encodings = tokenizer.encode_batch([(t, q.context) for t, q in zip(texts, questions.questions)])
    finally:
        tokenizer.no_padding()
        tokenizer.no_truncation()
    ids, types, masks, starts, ends, owners, offsets, firsts, lasts = [], [], [], [], [], [], [], [], []
    for index, (question, first) in enumerate(zip(questions.questions, encodings)):
        answer = question.answers[0] if question.answers else None
        for window in [first, *first.overflowing]:
            in_context = np.asarray([s == 1 for s in window.sequence_ids])
            spans = np.where(in_context[:, None], np.asarray(window.offsets, np.int32), -1)
            ids.append(window.ids)
            types.append(window.type_ids)
            masks.append(window.attention_mask)
            owners.append(index)
            start = end = 0
            context_tokens = np.flatnonzero(in_context)
            firsts.append(context_tokens[0] if len(context_tokens) else 0)
            lasts.append(context_tokens[-1] if len(context_tokens) else 0)
            if answer is not None and len(context_tokens):
                first_char, last_char = answer[1], answer[1] + len(answer[0])
                if spans[context_tokens[0], 0] <= first_char and spans[context_tokens[-1], 1] >= last_char:
                    start = int(context_tokens[spans[context_tokens, 0] <= first_char][-1])
                    end = int(context_tokens[spans[context_tokens, 1] >= last_char][0])
            starts.append(start)
            ends.append(end)
            if keep_offsets:
                offsets.append(spans)
    return Windows(
        np.asarray(ids, np.int32),
        np.asarray(types, np.int32),
        np.asarray(masks, np.int32),
        np.asarray(starts, np.int32),
        np.asarray(ends, np.int32),
        np.asarray(owners, np.int32),
        np.asarray(firsts, np.int32),
        np.asarray(lasts, np.int32),
        np.asarray(offsets, np.int32) if keep_offsets else None,
    )


@dataclasses.dataclass
class Decoded:
    """Each question's answer text, its n-best candidates and (v2.0) its no-answer odds."""

    answers: dict[str, str]
    nbest: dict[str, list[dict[str, Any]]]
    null_odds: dict[str, float]


def decode(
    questions: Questions,
    windows: Windows,
    logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> Decoded:
    """The best answer of each question from its windows' start and end logits [windows, length, 2].

    In each window the `n_best_size` best starts and ends are paired; a pair is a candidate when
    both are context tokens, the end is not before the start and the span is at most
    `max_answer_length` tokens. A candidate scores start + end logit; the question's best
    `n_best_size` over all its windows get probabilities (a softmax over their scores). With v2.0,
    the null answer scores the smallest [CLS] start + end over the windows, and the answer is ""
    when null - best span > `null_score_diff_threshold`.
    """
    assert windows.offsets is not None
    by_question: dict[int, list[int]] = {}
    for row, owner in enumerate(windows.question_index):
        by_question.setdefault(int(owner), []).append(row)
    answers, nbest, null_odds = {}, {}, {}
    for index, question in enumerate(questions.questions):
        candidates: list[tuple[float, float, float, int, int]] = []
        null_score = None
        for row in by_question.get(index, []):
            start_logits, end_logits = logits[row, :, 0], logits[row, :, 1]
            valid = windows.offsets[row, :, 0] >= 0
            window_null = float(start_logits[0] + end_logits[0])
            null_score = window_null if null_score is None else min(null_score, window_null)
            starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
            ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
            s, e = np.meshgrid(starts, ends, indexing="ij")
            keep = valid[s] & valid[e] & (e >= s) & (e - s + 1 <= max_answer_length)
            for i, j in zip(s[keep], e[keep]):
                first = int(windows.offsets[row, i, 0])
                last = int(windows.offsets[row, j, 1])
                candidates.append(
                    (float(start_logits[i] + end_logits[j]), float(start_logits[i]), float(end_logits[j]), first, last)
                )
        candidates.sort(key=lambda c: -c[0])
        best = [
            {
                "text": question.context[c[3] : c[4]],
                "start": c[3],
                "end": c[4],
                "score": c[0],
                "start_logit": c[1],
                "end_logit": c[2],
            }
            for c in candidates[:n_best_size]
        ]
        if version_2_with_negative and null_score is not None:
            best.append({"text": "", "start": -1, "end": -1, "score": null_score})
            best.sort(key=lambda c: -c["score"])
        if not best:  # no window held a valid span
            best = [{"text": "", "start": -1, "end": -1, "score": 0.0}]
        scores = np.asarray([c["score"] for c in best])
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        for c, p in zip(best, probabilities):
            c["probability"] = float(p)
        spans = [c for c in best if c["start"] >= 0]
        answer = spans[0]["text"] if spans else ""
        if version_2_with_negative:
            odds = (null_score if null_score is not None else 0.0) - (spans[0]["score"] if spans else -np.inf)
            null_odds[question.id] = float(min(odds, 1e9))
            if odds > null_score_diff_threshold:
                answer = ""
        answers[question.id] = answer
        nbest[question.id] = best
    return Decoded(answers, nbest, null_odds)
