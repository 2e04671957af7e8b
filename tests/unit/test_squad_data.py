"""SQuAD-layout reading, windows over long contexts and decoding: every answer survives the
windows with its exact characters, on Unicode and odd whitespace; bad files name the question."""

import json

import numpy as np
import pytest

from bertjax.data import squad
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import DataError

CONTEXTS = [
    "Café  déjà vu:\tthe naïve résumé was written in 1995 by Zoë Kravitz, who lives in São Paulo.\n"
    "Later that year, the résumé reached 東京 and then Montréal, where it stayed for a long time.",
    "The quick brown fox jumps over the lazy dog. " * 12 + "At the end stands the word Zanzibar.",
]
ANSWERS = [["Zoë Kravitz", "1995", "São Paulo", "東京", "Montréal"], ["Zanzibar", "quick brown fox"]]


def squad_file(path, version_2=False, answers=True):
    paragraphs = []
    for c, (context, texts) in enumerate(zip(CONTEXTS, ANSWERS)):
        qas = []
        for a, text in enumerate(texts):
            qa = {"id": f"q{c}{a}", "question": f"Where or what is thing number {a}?"}
            if answers:
                qa["answers"] = [{"text": text, "answer_start": context.index(text)}]
            qas.append(qa)
        if version_2:
            qas.append({"id": f"n{c}", "question": "What is unanswerable?", "answers": [], "is_impossible": True})
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(
        json.dumps({"version": "2.0" if version_2 else "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]})
    )
    return path


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return load_tokenizer(vocab_file, lowercase=True)


def test_reader_v1_and_v2(tmp_path):
    v1 = squad.read_file(squad_file(tmp_path / "v1.json"))
    assert len(v1) == 7 and v1.labelled and v1.labels["q00"] == ["Zoë Kravitz"]
    v2 = squad.read_file(squad_file(tmp_path / "v2.json", version_2=True), version_2_with_negative=True)
    assert len(v2) == 9 and v2.labels["n0"] == [] and v2.questions[5].is_impossible
    unlabelled = squad.read_file(squad_file(tmp_path / "test.json", answers=False))
    assert not unlabelled.labelled and unlabelled.labels is None


@pytest.mark.parametrize(
    "case", ["misplaced", "missing_question", "repeated_id", "impossible_in_v1", "not_json", "no_answer"]
)
def test_bad_files_name_the_file_and_question(tmp_path, case):
    path = squad_file(tmp_path / "bad.json", version_2=case == "impossible_in_v1")
    record = json.loads(path.read_text())
    qas = record["data"][0]["paragraphs"][0]["qas"]
    if case == "misplaced":
        qas[1]["answers"][0]["answer_start"] += 1
        expected = "question q01: answer '1995' is not the context's text at answer_start="
    elif case == "missing_question":
        del qas[2]["question"]
        expected = "question q02: no 'question'"
    elif case == "repeated_id":
        qas[3]["id"] = "q00"
        expected = "question q00: the id is repeated"
    elif case == "impossible_in_v1":
        expected = "question n0: an unanswerable question (is_impossible), a SQuAD v2.0 file"
    elif case == "no_answer":
        qas[4]["answers"] = []
        expected = "question q04: no answer, and not marked is_impossible"
    path.write_text(json.dumps(record) if case != "not_json" else '{"data": [')
    if case == "not_json":
        expected = "line 1: not JSON"
    with pytest.raises(DataError, match="^" + str(path).replace(".", r"\.")) as error:
        squad.read_file(path)
    assert expected in str(error.value)


@pytest.mark.parametrize(("length", "stride"), [(24, 4), (32, 8), (64, 16)])
def test_windows_lose_no_answer_and_keep_exact_characters(tmp_path, tokenizer, length, stride):
    questions = squad.read_file(squad_file(tmp_path / "v1.json"))
    windows = squad.encode(questions, tokenizer, length, stride, max_query_length=6)
    assert windows.input_ids.shape[1] == length and len(windows.input_ids) > len(questions)
    for index, question in enumerate(questions.questions):
        rows = np.flatnonzero(windows.question_index == index)
        # Every character of the context that is not whitespace is in some window.
        covered = np.zeros(len(question.context), bool)
        for row in rows:
            for first, last in windows.offsets[row]:
                covered[first:last] = first >= 0
        assert all(covered[i] or ch.isspace() for i, ch in enumerate(question.context))
        # The answer is marked in at least one window, and its tokens' offsets cut exactly its text.
        text, _ = question.answers[0]
        found = [r for r in rows if windows.start_positions[r] > 0]
        assert found, (question.id, length)
        for row in found:
            first = windows.offsets[row, windows.start_positions[row], 0]
            last = windows.offsets[row, windows.end_positions[row], 1]
            assert question.context[first:last] == text
        # The question is cut to 6 tokens and is the first segment of each window.
        assert all(
            windows.token_type_ids[r, 1] == 0 and windows.input_ids[r, 0] == tokenizer.token_to_id("[CLS]")
            for r in rows
        )
        # context_start..context_end are exactly the tokens with character offsets, the answer among them.
        for row in rows:
            positions = np.arange(length)
            inside = (positions >= windows.context_start[row]) & (positions <= windows.context_end[row])
            np.testing.assert_array_equal(inside, windows.offsets[row, :, 0] >= 0)
            if windows.start_positions[row] > 0:
                assert inside[windows.start_positions[row]] and inside[windows.end_positions[row]]


def _one_question(context, windows_offsets):
    questions = squad.Questions([squad.Question("q", "?", context, [])], "x", False)
    n, length = len(windows_offsets), len(windows_offsets[0])
    windows = squad.Windows(
        *(np.zeros((n, length), np.int32) for _ in range(3)),
        *(np.zeros(n, np.int32) for _ in range(5)),
        np.asarray(windows_offsets, np.int32),
    )
    return questions, windows


def test_decoding_takes_the_best_span_over_windows():
    context = "aa bb cc dd ee"
    # Two windows: tokens 1-3 are context words; window 0 holds aa bb cc, window 1 holds cc dd ee.
    offsets = [
        [(-1, -1), (0, 2), (3, 5), (6, 8), (-1, -1)],
        [(-1, -1), (6, 8), (9, 11), (12, 14), (-1, -1)],
    ]
    questions, windows = _one_question(context, offsets)
    logits = np.full((2, 5, 2), -9.0, np.float32)
    logits[0, 1, 0], logits[0, 2, 1] = 2.0, 2.0  # window 0: "aa bb", 4
    logits[0, 4] = (20.0, 20.0)  # not a context token: no candidate
    logits[1, :, 0] = (-9.0, 3.0, -9.0, 9.0, -9.0)  # window 1: starts at cc (3) or ee (9)
    logits[1, :, 1] = (-9.0, 9.0, 3.0, -9.0, -9.0)  # ends at cc (9) or dd (3); ee..cc ends before it starts
    decoded = squad.decode(questions, windows, logits, n_best_size=3, max_answer_length=30)
    assert decoded.answers["q"] == "cc"
    best = decoded.nbest["q"]
    assert best[0]["text"] == "cc" and best[0]["start"] == 6 and best[0]["end"] == 8
    assert best[0]["score"] == pytest.approx(12.0) and sum(c["probability"] for c in best) == pytest.approx(1.0)
    assert [c["text"] for c in best] == ["cc", "cc dd", "aa bb"]  # scores 12, 6, 4
    assert best[0]["probability"] == pytest.approx(1 / (1 + np.exp(-6) + np.exp(-8)))
    # A span longer than max_answer_length tokens is not a candidate.
    short = squad.decode(questions, windows, logits, n_best_size=3, max_answer_length=1)
    assert all(c["end"] - c["start"] <= 2 for c in short.nbest["q"])


def test_v2_null_answer_against_the_threshold():
    context = "aa bb"
    questions, windows = _one_question(context, [[(-1, -1), (0, 2), (3, 5)]])
    logits = np.zeros((1, 3, 2), np.float32)
    logits[0, 0] = (2.0, 2.0)  # null: 4
    logits[0, 1] = (1.5, 1.5)  # "aa": 3
    decoded = squad.decode(questions, windows, logits, 20, 30, version_2_with_negative=True)
    assert decoded.answers["q"] == "" and decoded.null_odds["q"] == pytest.approx(1.0)
    assert decoded.nbest["q"][0]["text"] == ""
    lenient = squad.decode(questions, windows, logits, 20, 30, True, null_score_diff_threshold=1.5)
    assert lenient.answers["q"] == "aa"
