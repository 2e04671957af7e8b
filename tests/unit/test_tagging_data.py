"""Tagged-sentence readers (CoNLL, JSONL), windows that tag every word once, and the predictions
file in conlleval's layout."""

import json

import numpy as np
import pytest

from bertjax.data import tagging
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import DataError

CONLL = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "EU NNP B-NP B-ORG\n"
    "rejects\tVBZ\tB-VP\tO\n"
    "German JJ B-NP B-MISC\n"
    "   \n"  # whitespace-only: ends the sentence
    "Peter NNP B-NP B-PER\n"
    "Blackburn  NNP B-NP   I-PER\n"
    "\n"
    "\n"
    "-DOCSTART- -X- -X- O\n"
    "Brüssel NNP B-NP B-LOC\n"
)
LABELS = ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O")


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return load_tokenizer(vocab_file, lowercase=True)


def test_conll_reader_columns_blank_lines_and_docstart(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    sentences = tagging.read_file(path)
    assert sentences.words == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["Brüssel"]]
    assert sentences.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert sentences.lines == [[2, 3, 4], [6, 7], [11]]
    unlabelled = tmp_path / "test.txt"
    unlabelled.write_text("EU\nrejects\n\nPeter\n")
    assert tagging.read_file(unlabelled).tags is None


def test_jsonl_reader(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}\n\n{"tokens": ["Peter"], "tags": ["B-PER"]}\n'
    )
    sentences = tagging.read_file(path)
    assert sentences.words == [["EU", "rejects"], ["Peter"]] and sentences.tags == [["B-ORG", "O"], ["B-PER"]]


@pytest.mark.parametrize(
    ("name", "text", "scheme", "expected"),
    [
        ("a.txt", "EU B-ORG\nrejects X-ORG\n", "iob2", "a.txt line 2: tag 'X-ORG' is not one of iob2's"),
        ("b.txt", "EU S-ORG\n", "iob1", "b.txt line 1: tag 'S-ORG' is not one of iob1's"),
        ("c.txt", "EU B-ORG\nrejects B-DATE\n", "iob2", "c.txt line 2: tag 'B-DATE' is not one of"),
        ("d.txt", "EU B-ORG\nrejects\n", "iob2", "d.txt line 2: expected a token and its tag"),
        (
            "e.jsonl",
            '{"tokens": ["EU"], "tags": ["O", "O"]}\n',
            "iob2",
            "e.jsonl line 1: 'tags' must be a list as long",
        ),
        ("f.jsonl", '{"tokens": "EU"}\n', "iob2", "f.jsonl line 1: expected an object with a list of strings"),
        ("g.txt", "\n\n", "iob2", "g.txt holds no sentences"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, name, text, scheme, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as error:
        tagging.check_tags(tagging.read_file(path), scheme, ("B-ORG", "O", "S-ORG", "X-ORG"))
    assert expected in str(error.value)


def test_long_sentences_are_split_into_windows_and_every_word_is_tagged(tokenizer):
    rng = np.random.default_rng(0)
    vocabulary = ["EU", "rejects", "German", "call", "antidisestablishmentarianism", "Brüssel", ",", "1996-08-22"]
    words = [[str(w) for w in rng.choice(vocabulary, int(rng.integers(1, 40)))] for _ in range(50)]
    tags = [[str(t) for t in rng.choice(LABELS, len(s))] for s in words]
    sentences = tagging.Sentences(words, tags, "x", "jsonl", [[0] * len(s) for s in words])
    encoded = tagging.encode(sentences, tokenizer, 12, LABELS)
    assert encoded.input_ids.shape[1] == 12 and encoded.windows_of_long_sentences > 0
    assert len(encoded.input_ids) == 50 + encoded.windows_of_long_sentences
    # Each word's first sub-token carries its tag, once; nothing else does.
    assert (encoded.labels != tagging.IGNORE).sum() == sum(len(s) for s in words)
    one_hot = np.eye(len(LABELS))[np.maximum(encoded.labels, 0)]
    assert tagging.predicted_tags(encoded, one_hot, LABELS) == tags
    # Rows are [CLS] ... [SEP] within the attention mask.
    lengths = encoded.attention_mask.sum(1)
    assert (encoded.input_ids[:, 0] == tokenizer.token_to_id("[CLS]")).all()
    assert (encoded.input_ids[np.arange(len(lengths)), lengths - 1] == tokenizer.token_to_id("[SEP]")).all()


def test_predictions_add_a_column_to_the_conll_file(tmp_path):
    path = tmp_path / "test.txt"
    path.write_text(CONLL)
    sentences = tagging.read_file(path)
    out = tagging.write_predictions(sentences, [["B-ORG", "O", "O"], ["B-PER", "B-PER"], ["O"]], tmp_path / "p.txt")
    lines = out.read_text().splitlines()
    assert lines[0] == "-DOCSTART- -X- -X- O" and lines[1] == ""
    assert lines[2] == "EU NNP B-NP B-ORG B-ORG" and lines[4] == "German JJ B-NP B-MISC O"
    assert lines[7] == "Blackburn  NNP B-NP   I-PER B-PER" and lines[11] == "Brüssel NNP B-NP B-LOC O"
    assert len(lines) == len(CONLL.splitlines())
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}) + "\n")
    out = tagging.write_predictions(tagging.read_file(jsonl), [["B-ORG", "B-MISC"]], tmp_path / "q.txt")
    assert out.read_text() == "EU B-ORG B-ORG\nrejects O B-MISC\n"
