"""WordPiece tokenization equals transformers' BertTokenizerFast on the same vocab."""

import shutil

import pytest

from bertjax.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, read_vocab, special_ids, subword_flags, train_vocab
from bertjax.errors import ConfigError, DataError

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


# Byte-level BPE (RoBERTa, ModernBERT): a tokenizer.json read as it is, against transformers'
# RobertaTokenizer built from the same merges (vocab.json + merges.txt, not the tokenizer.json).

PAIRS = [(a, b) for a, b in zip(TEXTS, reversed(TEXTS)) if a and b]


def _roberta_reference(bpe_folder, **kwargs):
    transformers = pytest.importorskip("transformers")
    return transformers.RobertaTokenizer.from_pretrained(str(bpe_folder / "reference"), **kwargs)


def test_byte_level_bpe_equal_to_roberta_tokenizer(bpe_folder):
    ours = load_tokenizer(bpe_folder / "tokenizer.json")
    reference = _roberta_reference(bpe_folder)
    for text in TEXTS:
        expected = reference(text, return_offsets_mapping=True)
        encoding = ours.encode(text)
        assert encoding.ids == expected["input_ids"], text
        assert encoding.offsets == [tuple(o) for o in expected["offset_mapping"]], text
    for a, b in PAIRS:  # <s> A </s></s> B </s>, every token of type 0
        assert ours.encode(a, b).ids == reference(a, b)["input_ids"]
        assert set(ours.encode(a, b).type_ids) == {0}


def test_byte_level_bpe_special_ids_and_word_starts(bpe_folder):
    tok = load_tokenizer(bpe_folder / "tokenizer.json")
    ids = special_ids(tok)
    assert (ids.cls, ids.pad, ids.sep, ids.unk, ids.mask) == (0, 1, 2, 3, 4)
    flags = subword_flags(tok)
    pieces = tok.encode("Hello worldwide").tokens[1:-1]  # the first word has no leading space
    assert [bool(flags[tok.token_to_id(p)]) for p in pieces] == [not p.startswith("\u0120") for p in pieces]
    assert any(flags[tok.token_to_id(p)] for p in pieces) and not flags[:5].any()


def test_padded_and_truncated_pairs_as_transformers(bpe_folder):
    from bertjax.data.labelled import encode_inputs

    ours = load_tokenizer(bpe_folder / "tokenizer.json")
    reference = _roberta_reference(bpe_folder)
    inputs = [TEXTS[0], *PAIRS[:4]]
    ids, types, mask, truncated = encode_inputs(inputs, ours, 24)
    for row, item in enumerate(inputs):
        a, b = item if isinstance(item, tuple) else (item, None)
        expected = reference(a, b, padding="max_length", truncation="longest_first", max_length=24)
        assert ids[row].tolist() == expected["input_ids"] and mask[row].tolist() == expected["attention_mask"]
    assert (ids[mask == 0] == 1).all() and truncated > 0  # RoBERTa's <pad> is 1


def test_bpe_words_tagged_as_transformers_with_prefix_space(bpe_folder):
    """NER windows: each word read after a space, as RoBERTa's add_prefix_space=True does."""
    from bertjax.data.tagging import Sentences, encode

    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn", "Café"]]
    tags = [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER", "O"]]
    sentences = Sentences(words, tags, "test", "conll", [[0] * 4, [0] * 3])
    labels = ("O", "B-ORG", "B-MISC", "B-PER", "I-PER")
    encoded = encode(sentences, load_tokenizer(bpe_folder / "tokenizer.json"), 16, labels)
    reference = _roberta_reference(bpe_folder, add_prefix_space=True)
    for row, sentence in enumerate(words):
        expected = reference(sentence, is_split_into_words=True, padding="max_length", max_length=16)
        assert encoded.input_ids[row].tolist() == expected["input_ids"]
        first_pieces = [expected.word_ids().index(w) for w in range(len(sentence))]
        assert encoded.word_positions[row][:, 1].tolist() == first_pieces


def test_bpe_question_windows_map_back_to_the_answer(bpe_folder):
    from bertjax.data.squad import Question, Questions, encode

    context = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France."
    questions = [
        Question("q1", "In what country is Normandy located?", context, [("France", context.index("France"))]),
        Question(
            "q2", "When were the Normans in Normandy?", context, [("10th and 11th centuries", context.index("10th"))]
        ),
    ]
    tokenizer = load_tokenizer(bpe_folder / "tokenizer.json")
    with pytest.raises(ConfigError, match="task.doc_stride=8 must be below .* 4 special tokens = 8"):
        encode(Questions(questions, "test", True), tokenizer, 24, 8, 12)  # 24 - 12 - <s></s></s></s>
    windows = encode(Questions(questions, "test", True), tokenizer, 32, 8, 12)
    assert windows.input_ids[0, 0] == 0 and (windows.input_ids[windows.attention_mask == 0] == 1).all()
    found = set()
    for row, owner in enumerate(windows.question_index):
        start, end = windows.start_positions[row], windows.end_positions[row]
        if start:
            text = context[windows.offsets[row, start, 0] : windows.offsets[row, end, 1]]
            assert text == questions[owner].answers[0][0]
            found.add(owner)
    assert found == {0, 1} and len(windows.question_index) > 2  # several windows each, answers found


def test_tokenizer_json_without_template_gets_berts_and_bad_files(bpe_folder, tmp_path):
    import json

    spec = json.loads((bpe_folder / "tokenizer.json").read_text())
    spec["post_processor"] = None
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(spec))
    tok = load_tokenizer(bare)
    assert tok.encode("a", "b").tokens == ["<s>", "a", "</s>", "b", "</s>"]
    assert tok.encode("a", "b").type_ids == [0, 0, 0, 1, 1]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "<mask>"]
    del spec["model"]["vocab"]["<mask>"]
    no_mask = tmp_path / "no_mask.json"
    no_mask.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"no_mask.json has no mask token \(\[MASK\] or <mask>\)"):
        load_tokenizer(no_mask)
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"model": 3}')
    with pytest.raises(DataError, match=f"tokenizer file {broken} is not a tokenizer.json"):
        load_tokenizer(broken)
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
