"""WordPiece tokenization equals transformers' BertTokenizerFast on the same vocab."""

import shutil

import pytest

from bertjax.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, read_vocab, special_ids, subword_flags, train_vocab
from bertjax.errors import DataError

TEXTS = [
    "Hello, world! This is BERT.",
    "Café déjà vu: naïve résumé, Ångström and façade.",
    "北京是中国的首都。東京は日本の首都です。",
    "Don't stop-believing... (it's 3.14159) — okay?!",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 150,  # longer than max_input_chars_per_word: one [UNK]
    "zzqxj wibblewobble unknownwordpiece",
    "  multiple   spaces\tand\ttabs\nand newlines  ",
    "Emoji 🙂 and symbols © ® ™ ∑ ∞",
    "",
    "MiXeD CaSe WoRdS",
]


def _reference(vocab_file, tmp_path, lowercase=True):
    """transformers' BertTokenizerFast loaded the usual way: a folder holding vocab.txt."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "reference"
    folder.mkdir()
    shutil.copy(vocab_file, folder / "vocab.txt")
    return transformers.BertTokenizerFast.from_pretrained(str(folder), do_lower_case=lowercase)


@pytest.mark.parametrize("lowercase", [True, False])
def test_equal_to_bert_tokenizer_fast(vocab_file, tmp_path, lowercase):
    ours = load_tokenizer(vocab_file, lowercase=lowercase)
    reference = _reference(vocab_file, tmp_path, lowercase)
    for text in TEXTS:
        assert ours.encode(text).ids == reference(text)["input_ids"], text
    for a, b in zip(TEXTS, reversed(TEXTS)):
        if not (a and b):
            continue  # transformers treats an empty text_pair as no pair at all
        assert ours.encode(a, b).ids == reference(a, b)["input_ids"]
        assert ours.encode(a, b).type_ids == reference(a, b)["token_type_ids"]


def test_special_ids_and_subword_flags(vocab_file):
    tok = load_tokenizer(vocab_file)
    ids = special_ids(tok)
    assert (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask) == (0, 100, 101, 102, 103)
    flags = subword_flags(tok)
    assert flags[tok.token_to_id("##ing")] and not flags[tok.token_to_id("the")]


def test_trained_vocab_round_trips(tmp_path):
    corpus = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs"] * 50
    vocab = train_vocab(corpus, tmp_path, vocab_size=200, min_frequency=1)
    tokens = read_vocab(vocab)
    assert all(t in tokens for t in SPECIAL_TOKENS)
    ours = load_tokenizer(vocab)
    reference = _reference(vocab, tmp_path)
    for text in corpus[:2] + ["unseen words here"]:
        assert ours.encode(text).ids == reference(text)["input_ids"]


def test_bad_vocab(tmp_path):
    missing = tmp_path / "vocab.txt"
    missing.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(DataError, match=r"has no \[MASK\] token"):
        load_tokenizer(missing)
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(DataError, match="line 2 is not UTF-8"):
        load_tokenizer(binary)


def test_train_vocab_command(tmp_path, sample_files):
    from bertjax.data.tokenizer import main

    main([f"--files={sample_files['news']}", f"--out={tmp_path}", "--vocab_size=2000"])
    tokens = read_vocab(tmp_path / "vocab.txt")
    assert 1500 < len(tokens) <= 2000 and "the" in tokens and any(t.startswith("##") for t in tokens)
    with pytest.raises(SystemExit) as exit_info:
        main([f"--files={tmp_path}/missing.txt", f"--out={tmp_path}"])
    assert exit_info.value.code == 2
