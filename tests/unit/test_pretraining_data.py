"""Pretraining examples: pairing, NSP, masking statistics, determinism, corpus errors."""

import dataclasses
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bertjax.config import DataConfig, ModelConfig, TrainConfig, validate_data
from bertjax.data import corpus, pretraining
from bertjax.data.tokenizer import load_tokenizer, special_ids
from bertjax.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def news_config(sample_files):
    return DataConfig(
        train_files=(str(sample_files["news"]),),
        corpus_format="paragraphs",
        vocab_file=str(sample_files["vocab"]),
        max_documents=400,
    )


@pytest.fixture(scope="module")
def tokenizer(news_config):
    return load_tokenizer(news_config.vocab_file)


@pytest.fixture(scope="module")
def prepared(news_config, tokenizer, tmp_path_factory):
    return pretraining.prepare(news_config, tokenizer, tmp_path_factory.mktemp("prepared"))


def _examples(prepared, tokenizer, config, count=1500, epoch=0):
    source = pretraining.load_split(prepared, "train", config, tokenizer)
    return source, [source.example(i, epoch) for i in range(min(count, len(source)))]


def test_pairs_are_valid_spans(prepared, news_config):
    instances = np.load(prepared / "train_instances.npy")
    a_len = instances[:, 1] - instances[:, 0]
    b_len = instances[:, 3] - instances[:, 2]
    assert (a_len >= 1).all() and (b_len >= 1).all()
    assert (a_len + b_len <= news_config.max_seq_length - 3).all()
    # Most pairs fill the sequence (short_seq_prob = 0.1 of targets are shorter).
    assert np.mean(a_len + b_len >= news_config.max_seq_length - 3 - 10) > 0.6
    actual_next = instances[:, 4] == 0
    assert (instances[actual_next, 2] >= instances[actual_next, 1]).all()  # B follows A


def test_nsp_masking_and_special_tokens(prepared, tokenizer, news_config):
    special = special_ids(tokenizer)
    _, examples = _examples(prepared, tokenizer, news_config)
    nsp = np.mean([ex["next_sentence_labels"] for ex in examples])
    assert 0.45 < nsp < 0.6, nsp  # 50% random, plus single-sentence chunks that must be random

    masked = chosen = total = unchanged = random_token = 0
    for ex in examples:
        n = int(ex["attention_mask"].sum())
        k = int(ex["masked_lm_weights"].sum())
        assert k == min(news_config.max_predictions_per_seq, max(1, round(n * news_config.masked_lm_prob)))
        positions, labels = ex["masked_lm_positions"][:k], ex["masked_lm_ids"][:k]
        assert len(set(positions.tolist())) == k and (np.diff(positions) > 0).all()
        assert not np.isin(labels, [special.cls, special.sep, special.pad]).any()
        assert (positions > 0).all() and (positions < n - 1).all()
        inputs = ex["input_ids"][positions]
        masked += int((inputs == special.mask).sum())
        unchanged += int((inputs == labels).sum())
        random_token += int(((inputs != labels) & (inputs != special.mask)).sum())
        chosen += k
        total += n
    assert abs(chosen / total - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02
    assert abs(unchanged / chosen - 0.1) < 0.015
    assert abs(random_token / chosen - 0.1) < 0.015


def test_masking_ratio_and_prediction_cap(prepared, tokenizer, news_config):
    heavy = dataclasses.replace(news_config, masked_lm_prob=0.3, max_predictions_per_seq=40)
    _, examples = _examples(prepared, tokenizer, heavy, count=600)
    ratio = sum(ex["masked_lm_weights"].sum() for ex in examples) / sum(ex["attention_mask"].sum() for ex in examples)
    assert abs(ratio - 0.3) < 0.01
    capped = dataclasses.replace(news_config, max_predictions_per_seq=5)
    _, examples = _examples(prepared, tokenizer, capped, count=300)
    counts = [int(ex["masked_lm_weights"].sum()) for ex in examples]
    assert max(counts) == 5 and len(examples[0]["masked_lm_ids"]) == 5


def test_replacement_split_follows_the_config(prepared, tokenizer, news_config):
    """ELECTRA's split (data.mask_token_prob=0.85, random_token_prob=0): 85% of the chosen tokens
    become [MASK], none a random token, the rest stay; a split over 1 is a config error."""
    special = special_ids(tokenizer)
    electra = dataclasses.replace(news_config, mask_token_prob=0.85, random_token_prob=0.0)
    _, examples = _examples(prepared, tokenizer, electra, count=800)
    chosen = masked = unchanged = 0
    for ex in examples:
        k = int(ex["masked_lm_weights"].sum())
        inputs, labels = ex["input_ids"][ex["masked_lm_positions"][:k]], ex["masked_lm_ids"][:k]
        chosen, masked, unchanged = (
            chosen + k,
            masked + (inputs == special.mask).sum(),
            unchanged + (inputs == labels).sum(),
        )
    assert abs(masked / chosen - 0.85) < 0.02 and masked + unchanged == chosen
    with pytest.raises(ConfigError, match="data.mask_token_prob=0.85 and data.random_token_prob=0.2 add up"):
        validate_data(dataclasses.replace(electra, random_token_prob=0.2), ModelConfig())


def test_whole_word_masking_masks_whole_words(prepared, tokenizer, news_config):
    wwm = dataclasses.replace(news_config, whole_word_masking=True)
    source, examples = _examples(prepared, tokenizer, wwm, count=800)
    is_subword = source.is_subword
    multi_piece_words = 0
    for ex in examples:
        n = int(ex["attention_mask"].sum())
        k = int(ex["masked_lm_weights"].sum())
        assert k <= news_config.max_predictions_per_seq
        masked = np.zeros(n, bool)
        masked[ex["masked_lm_positions"][:k]] = True
        original = ex["input_ids"].copy()
        original[ex["masked_lm_positions"][:k]] = ex["masked_lm_ids"][:k]
        for p in range(1, n - 1):
            if is_subword[original[p]] and original[p - 1] not in (101, 102):
                # a ## piece is masked exactly when the piece before it is
                assert masked[p] == masked[p - 1], (p, original[p - 3 : p + 2])
                multi_piece_words += masked[p]
    assert multi_piece_words > 50  # the test saw real multi-piece words being masked


def test_deterministic_and_keyed_by_seed_epoch_index(prepared, tokenizer, news_config, tmp_path):
    again = pretraining.prepare(news_config, tokenizer, tmp_path)  # a fresh preparation
    for name in ("train_tokens.npy", "train_instances.npy", "eval_instances.npy"):
        np.testing.assert_array_equal(np.load(prepared / name), np.load(again / name))
    a = pretraining.load_split(prepared, "train", news_config, tokenizer)
    b = pretraining.load_split(again, "train", news_config, tokenizer)
    for i in (0, 17, 401):
        for key, value in a.example(i, 3).items():
            np.testing.assert_array_equal(value, b.example(i, 3)[key])
    # Static masking ignores the epoch; dynamic masking draws new masks each epoch.
    assert all(
        np.array_equal(a.example(i, 0)["masked_lm_positions"], a.example(i, 1)["masked_lm_positions"])
        for i in range(20)
    )
    dynamic = pretraining.load_split(prepared, "train", dataclasses.replace(news_config, masking="dynamic"), tokenizer)
    differ = sum(
        not np.array_equal(dynamic.example(i, 0)["masked_lm_positions"], dynamic.example(i, 1)["masked_lm_positions"])
        for i in range(20)
    )
    assert differ >= 18
    # Another seed pairs differently.
    other = pretraining.prepare(dataclasses.replace(news_config, seed=7), tokenizer, tmp_path)
    assert not np.array_equal(np.load(other / "train_instances.npy"), np.load(prepared / "train_instances.npy"))


def test_host_shards_and_epochs_compose_the_global_batch(prepared, tokenizer, news_config):
    source = pretraining.load_split(prepared, "train", news_config, tokenizer)
    whole = source.batch(5, 8)
    halves = [source.batch(5, 8, process_index=p, process_count=2) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["input_ids"] for h in halves]), whole["input_ids"])
    # Each epoch visits every instance once, in a new order.
    n = len(source)
    first, _ = source.global_indices(0, n)
    second, epochs = source.global_indices(n, n)
    assert sorted(first.tolist()) == list(range(n)) == sorted(second.tolist())
    assert (epochs == 1).all() and not np.array_equal(first, second)


def test_batch_iterator_matches_direct_batches(prepared, tokenizer, news_config):
    source = pretraining.load_split(prepared, "train", news_config, tokenizer)
    iterator = pretraining.batch_iterator(source, 3, 6, 4, num_threads=2)
    for step in range(3, 6):
        np.testing.assert_array_equal(next(iterator)["input_ids"], source.batch(step, 4)["input_ids"])
    iterator.close()


def test_loader_processes_give_the_threads_batches(prepared, tokenizer, news_config):
    """Two spawned loader processes hand out the same batches, in step order, as the threads."""
    source = pretraining.load_split(prepared, "train", news_config, tokenizer)
    threads = pretraining.batch_iterator(source, 2, 7, 4, num_threads=2)
    processes = pretraining.batch_iterator(source, 2, 7, 4, num_threads=1, num_processes=2)
    for _ in range(2, 7):
        expected, got = next(threads), next(processes)
        assert expected.keys() == got.keys()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    for iterator in (threads, processes):
        with pytest.raises(StopIteration):
            next(iterator)
        iterator.close()


_LOADER_TO_THE_END = textwrap.dedent(
    """
    import sys

    import jax
    from absl import flags

    from bertjax.config import DataConfig
    from bertjax.data import pretraining
    from bertjax.data.tokenizer import load_tokenizer

    def main(prepared, news, vocab, close):
        config = DataConfig(train_files=(news,), corpus_format="paragraphs", vocab_file=vocab, max_documents=400)
        source = pretraining.load_split(prepared, "train", config, load_tokenizer(vocab))
        batches = pretraining.batch_iterator(source, 0, 6, 4, num_threads=1, num_processes=2)
        for _ in range(6):  # as the train loop: the last batch stays referenced by device arrays
            on_device = {k: jax.device_put(v) for k, v in next(batches).items()}
        pretraining.close_batches(batches) if close == "close_batches" else batches.close()
        return on_device


    if __name__ == "__main__":
        flags.FLAGS.mark_as_parsed()
        main(*sys.argv[1:])
    """
)


@pytest.mark.slow  # over 10 s: left out of make test-fast
def test_loader_processes_release_their_shared_memory(prepared, sample_files, tmp_path):
    """grain frees the shared memory of the processes' batches on a background thread; ended with
    only grain's close(), the interpreter's exit cuts that short and the resource tracker warns of
    leaked shared_memory objects. `close_batches` waits for it."""
    script = tmp_path / "loader.py"
    script.write_text(_LOADER_TO_THE_END)
    stderr = {}
    for close in ("close_batches", "grain_close"):
        args = [
            sys.executable,
            str(script),
            str(prepared),
            str(sample_files["news"]),
            str(sample_files["vocab"]),
            close,
        ]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        stderr[close] = result.stderr
    assert "leaked shared_memory" not in stderr["close_batches"], stderr["close_batches"][-3000:]
    assert "leaked shared_memory" in stderr["grain_close"]  # the warning this test would see


def test_corpus_formats(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("First sentence here.\nSecond one.\n\n\nOther doc. It has two sentences.\n")
    assert list(corpus.read_text_file(text, "sentences")) == [
        ["First sentence here.", "Second one."],
        ["Other doc. It has two sentences."],
    ]
    assert list(corpus.read_text_file(text, "paragraphs"))[1] == ["Other doc.", "It has two sentences."]
    assert corpus.split_sentences("Dr. Smith met Mr. Jones at 5 p.m. Then they left.") == [
        "Dr. Smith met Mr. Jones at 5 p.m.",
        "Then they left.",
    ]


def test_bad_corpus_files(tmp_path):
    with pytest.raises(DataError, match=r"corpus file .*missing\.txt does not exist"):
        list(corpus.read_text_files([str(tmp_path / "missing.txt")], "sentences"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"corpus file .*empty\.txt is empty"):
        list(corpus.read_text_files([str(empty)], "sentences"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok line\nsecond line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt line 3 is not UTF-8"):
        list(corpus.read_text_files([str(latin1)], "sentences"))


def _news_prefix(sample_files, path, size):
    """The sample news corpus up to the first document boundary after `size` characters."""
    text = sample_files["news"].read_text()
    path.write_text(text[: text.index("\n\n", size) + 2])
    return path


def test_preparation_streams_the_corpus_and_holds_out_by_the_rule(sample_files, tokenizer, tmp_path):
    """The corpus is read as a stream (twice, for the hold-out) and kept only as tokens: the traced
    peak grows by well under a byte per byte of text (it held every sentence as a Python string,
    about 4 bytes per byte). The prepared splits are those of the documented rule: a keyed
    permutation holds out round(eval_fraction x documents), the rest train, in corpus order."""
    small, large = (_news_prefix(sample_files, tmp_path / f"{n}.txt", n) for n in (1_000_000, 2_500_000))
    peaks = []
    for path in (small, large):
        config = DataConfig(train_files=(str(path),), corpus_format="paragraphs", dupe_factor=2)
        tracemalloc.start()
        try:
            prepared = pretraining.prepare(config, tokenizer, tmp_path / f"cache-{path.stem}")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    slope = (peaks[1] - peaks[0]) / (large.stat().st_size - small.stat().st_size)
    assert slope < 1.0, (peaks, slope)

    documents = list(corpus.read_text_files([str(large)], "paragraphs"))
    order = np.random.default_rng([config.seed, pretraining._HOLDOUT]).permutation(len(documents))
    held_out = set(order[: round(len(documents) * config.eval_fraction)].tolist())
    for key, split in enumerate(pretraining.SPLITS):
        chosen = [d for i, d in enumerate(documents) if (i in held_out) == (split == "eval")]
        docs = pretraining.tokenize_documents(chosen, tokenizer)
        np.testing.assert_array_equal(np.load(prepared / f"{split}_tokens.npy"), docs.tokens)
        instances = pretraining.create_instances(docs, config, key)
        np.testing.assert_array_equal(np.load(prepared / f"{split}_instances.npy"), instances)
    counts = np.load(prepared / "train_token_counts.npy")
    assert counts.sum() == len(np.load(prepared / "train_tokens.npy"))


def test_copies_paired_in_processes_equal_copies_paired_in_turn(sample_files, tokenizer, tmp_path):
    """data.prepare_processes pairs the dupe_factor copies side by side in spawned processes; the
    prepared data is the same as pairing them one after another."""
    path = _news_prefix(sample_files, tmp_path / "news.txt", 300_000)
    config = DataConfig(train_files=(str(path),), corpus_format="paragraphs", dupe_factor=3, prepare_processes=1)
    in_turn = pretraining.prepare(config, tokenizer, tmp_path / "in-turn")
    side_by_side = dataclasses.replace(config, prepare_processes=2)
    assert pretraining.fingerprint(side_by_side, tokenizer) == in_turn.name  # the same data, the same cache
    docs = pretraining.tokenize_documents(corpus.read_text_files([str(path)], "paragraphs"), tokenizer)
    assert pretraining.pairing_processes(docs, side_by_side) == 2
    assert pretraining.pairing_processes(docs, dataclasses.replace(config, prepare_processes=0)) == 1  # small
    parallel = pretraining.prepare(side_by_side, tokenizer, tmp_path / "side-by-side")
    assert sorted(f.name for f in parallel.iterdir()) == sorted(f.name for f in in_turn.iterdir())  # no scratch left
    for split in pretraining.SPLITS:
        instances = np.load(in_turn / f"{split}_instances.npy")
        assert len(instances) > 0
        np.testing.assert_array_equal(np.load(parallel / f"{split}_instances.npy"), instances)
    with pytest.raises(ConfigError, match="data.prepare_processes=-1 must be >= 0"):
        validate_data(dataclasses.replace(config, prepare_processes=-1), ModelConfig())


def test_document_tokenizer_drops_empty_sentences_and_documents(tokenizer):
    documents = [["The market rose.", "", "Shares fell."], [], ["", " "], ["Oil prices."]] * 3000
    docs = pretraining.tokenize_documents(documents, tokenizer, np.uint16)
    sentences = [s for d in documents for s in d if tokenizer.encode(s, add_special_tokens=False).ids]
    assert len(docs) == 2 * 3000 and len(docs.sentence_bounds) == len(sentences) == 3 * 3000
    assert docs.tokens.dtype == np.uint16
    expected = [t for s in sentences for t in tokenizer.encode(s, add_special_tokens=False).ids]
    np.testing.assert_array_equal(docs.tokens, expected)
    assert docs.sentence_lengths(1).tolist() == [
        len(tokenizer.encode(s, add_special_tokens=False).ids) for s in ["Oil prices."]
    ]


def test_failed_preparation_leaves_nothing(news_config, tokenizer, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pretraining, "create_instances", broken)
    with pytest.raises(RuntimeError):
        pretraining.prepare(news_config, tokenizer, tmp_path)
    assert list(tmp_path.iterdir()) == []


def _reference_pair(source, instance, epoch):
    """One pair built and masked by the rule, written out token by token: [CLS] A [SEP] B [SEP];
    the round(len x masked_lm_prob) (capped) non-special positions with the smallest stream-0 keys
    are predicted (whole words in the order of their first piece's key, skipping those that would
    overshoot, with whole-word masking); stream 1 picks [MASK] (< 0.8), the token itself (0.8-0.9) or stream 2's random
    token (>= 0.9). Only the keyed draws (`_pair_keys`, `_token_hashes`) are shared with the loader."""
    config, special = source.config, source.special
    a_start, a_end, b_start, b_end, is_random_next = (int(v) for v in source.instances[instance])
    a, b = source.tokens[a_start:a_end].tolist(), source.tokens[b_start:b_end].tolist()
    ids = [special.cls, *a, special.sep, *b, special.sep]
    masking_epoch = epoch if config.masking == "dynamic" else 0
    key = pretraining._pair_keys(config.seed, np.array([masking_epoch]), np.array([instance]))
    which, choice, token = (h[0].tolist() for h in pretraining._token_hashes(key, config.max_seq_length))
    candidates = [i for i in range(len(ids)) if i not in (0, len(a) + 1, len(ids) - 1)]
    count = min(config.max_predictions_per_seq, max(1, round(len(ids) * config.masked_lm_prob)))
    if config.whole_word_masking:  # words (a ## piece joins the one before it), taken whole by key
        words = []
        for i in candidates:
            if words and source.is_subword[ids[i]] and words[-1][-1] == i - 1:
                words[-1].append(i)
            else:
                words.append([i])
        positions = []
        for w in sorted(words, key=lambda w: which[w[0]]):
            if len(positions) + len(w) <= count:
                positions += w
        positions.sort()
    else:
        positions = sorted(sorted(candidates, key=lambda i: which[i])[:count])
    labels = [ids[i] for i in positions]
    for i in positions:
        u = (choice[i] >> 11) / 2.0**53
        if u < 0.8:
            ids[i] = special.mask
        elif u >= 0.9:
            ids[i] = int(source.random_tokens[token[i] % len(source.random_tokens)])
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return ids, types, positions, labels, is_random_next


def test_batches_follow_the_masking_rule_row_by_row(prepared, tokenizer, news_config):
    """The array-built batch against a pair-by-pair reference, for static and dynamic masking and
    whole-word masking, and a batch's rows equal the rows built one at a time (as another host or batch would)."""
    for masking, whole_words in (("static", False), ("dynamic", False), ("static", True)):
        config = dataclasses.replace(news_config, masking=masking, whole_word_masking=whole_words)
        source = pretraining.load_split(prepared, "train", config, tokenizer)
        indices, epochs = np.array([0, 5, 17, 401, 3, 5]), np.array([2, 2, 2, 3, 3, 3])
        batch = source.rows_batch(indices, epochs)
        for row, (index, epoch) in enumerate(zip(indices, epochs)):
            ids, types, positions, labels, nsp = _reference_pair(source, int(index), int(epoch))
            n, k = len(ids), len(positions)
            assert batch["input_ids"][row, :n].tolist() == ids and not batch["input_ids"][row, n:].any()
            assert batch["token_type_ids"][row, :n].tolist() == types
            assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (news_config.max_seq_length - n)
            assert batch["masked_lm_positions"][row, :k].tolist() == positions
            assert batch["masked_lm_ids"][row, :k].tolist() == labels
            assert batch["masked_lm_weights"][row].tolist() == [1.0] * k + [0.0] * (
                len(batch["masked_lm_weights"][row]) - k
            )
            assert batch["next_sentence_labels"][row] == nsp
            for key, value in source.example(int(index), int(epoch)).items():
                np.testing.assert_array_equal(batch[key][row], value)
        # Same instance, epochs 2 and 3: the same masks under static masking, new ones under dynamic.
        same = batch["masked_lm_positions"][1].tolist() == batch["masked_lm_positions"][5].tolist()
        assert same == (masking == "static")


def test_random_replacements_spread_over_the_vocabulary(prepared, tokenizer, news_config):
    """The 10% random tokens are ordinary vocabulary entries drawn all over it, not a few ids."""
    source = pretraining.load_split(prepared, "train", news_config, tokenizer)
    batch = source.rows_batch(np.arange(len(source)), np.zeros(len(source), np.int64))
    weights = batch["masked_lm_weights"] > 0
    rows = np.nonzero(weights)[0]
    inputs = batch["input_ids"][rows, batch["masked_lm_positions"][weights]]
    labels = batch["masked_lm_ids"][weights]
    replaced = inputs[(inputs != labels) & (inputs != source.special.mask)]
    assert len(replaced) > 500 and np.isin(replaced, source.random_tokens).all()
    vocab = tokenizer.get_vocab_size()
    assert len(np.unique(replaced)) > 0.9 * len(replaced) * (1 - len(replaced) / (2 * vocab))
    assert 0.4 * vocab < np.mean(replaced) < 0.6 * vocab  # uniform ids average half the vocabulary


def test_byte_level_bpe_rows_use_robertas_tokens_and_word_starts(bpe_folder, news_config, tmp_path):
    """A tokenizer.json (byte-level BPE): rows are `<s> A </s> B </s>`, <mask> replaces, no special
    token is ever a target or a random replacement, and whole-word masking keeps a word (a piece
    and the pieces after it without a leading `Ġ`) together."""
    bpe = load_tokenizer(bpe_folder / "tokenizer.json")
    config = dataclasses.replace(news_config, vocab_file=str(bpe_folder / "tokenizer.json"), max_documents=100)
    prepared = pretraining.prepare(config, bpe, tmp_path)
    wwm = dataclasses.replace(config, whole_word_masking=True)
    source, examples = _examples(prepared, bpe, wwm, count=400)
    assert not np.isin(source.random_tokens, [0, 1, 2, 3, 4]).any()  # <s> <pad> </s> <unk> <mask>
    words_together = 0
    for ex in examples:
        n = int(ex["attention_mask"].sum())
        k = int(ex["masked_lm_weights"].sum())
        positions, labels = ex["masked_lm_positions"][:k], ex["masked_lm_ids"][:k]
        original = ex["input_ids"].copy()
        original[positions] = labels
        assert original[0] == 0 and original[n - 1] == 2 and (original[n:] == 1).all()
        assert (original == 2).sum() == 2 and not np.isin(labels, [0, 1, 2, 3, 4]).any()
        masked = np.zeros(n, bool)
        masked[positions] = True
        for p in range(2, n - 1):
            word_start = bpe.id_to_token(int(original[p])).startswith("\u0120")
            if not word_start and original[p] != 2 and original[p - 1] != 2:
                assert masked[p] == masked[p - 1], bpe.decode(original[p - 3 : p + 2].tolist())
                words_together += masked[p]
    assert words_together > 20 and (np.concatenate([e["input_ids"] for e in examples]) == 4).sum() > 100


def test_document_runs_cover_each_document_in_order_in_full_rows(news_config, tokenizer, tmp_path):
    """example_format="documents": `[CLS] text [SEP]` rows of whole sentences of one document, in
    order, every token of the split in exactly one row; a row ends where the next sentence would
    not fit (or inside a sentence longer than a row); no next-sentence labels."""
    config = dataclasses.replace(news_config, example_format="documents", max_seq_length=64, max_documents=80)
    prepared = pretraining.prepare(config, tokenizer, tmp_path)
    instances = np.load(prepared / "train_instances.npy")
    tokens = np.load(prepared / "train_tokens.npy")
    assert (instances[:, 2] == instances[:, 1]).all() and (instances[:, 3] == instances[:, 1]).all()
    assert (instances[:, 4] == 0).all() and (instances[:, 1] - instances[:, 0] <= 62).all()
    covered = np.zeros(len(tokens), int)
    for start, end in instances[:, :2]:
        covered[start:end] += 1
    assert (covered == 1).all() and (np.diff(instances[:, 0]) > 0).all()
    assert np.mean(instances[:, 1] - instances[:, 0]) > 0.6 * 62  # rows mostly full, of whole paragraphs
    source, examples = _examples(prepared, tokenizer, config, count=200)
    special = special_ids(tokenizer)
    for index, ex in enumerate(examples):
        start, end = instances[index, :2]
        n = int(ex["attention_mask"].sum())
        original = ex["input_ids"].copy()
        k = int(ex["masked_lm_weights"].sum())
        original[ex["masked_lm_positions"][:k]] = ex["masked_lm_ids"][:k]
        assert n == end - start + 2 and original[0] == special.cls and original[n - 1] == special.sep
        assert (original[1 : n - 1] == tokens[start:end]).all() and not ex["token_type_ids"].any()
        assert k == min(config.max_predictions_per_seq, max(1, round(n * config.masked_lm_prob)))
    from bertjax import config as config_lib

    config_dict = config_lib.load_config_module(Path(__file__).parents[2] / "configs" / "pretrain.py").get_config()
    config_dict.data.example_format = "documents"
    with pytest.raises(
        ConfigError, match="example_format='documents' has no next-sentence task: set train.nsp_weight=0"
    ):
        config_lib.from_config_dict(config_dict)


def test_sentence_order_pairs_continue_each_other_and_half_are_swapped(news_config, tokenizer, tmp_path):
    """data.pair_task="sop" (ALBERT): B is always the text right after A in A's own document; with
    random_next_prob=0.5 about half the pairs are swapped (label 1: B's text comes before A's); the
    examples carry those labels, and the preparation is not NSP's."""
    import re

    lines = []
    for d in range(80):  # documents of 8 to 23 short sentences that name their document
        lines += [f"document {d} sentence {s} says hello ." for s in range(8 + d % 16)] + [""]
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(lines))
    sop = dataclasses.replace(news_config, train_files=(str(corpus_file),), corpus_format="sentences", pair_task="sop")
    sop = dataclasses.replace(sop, max_documents=0, eval_fraction=0.05, max_seq_length=64)
    assert pretraining.fingerprint(sop, tokenizer) != pretraining.fingerprint(
        dataclasses.replace(sop, pair_task="nsp"), tokenizer
    )
    prepared = pretraining.prepare(sop, tokenizer, tmp_path / "prepared")
    tokens = np.load(prepared / "train_tokens.npy")
    instances = np.load(prepared / "train_instances.npy").astype(np.int64)
    a_start, a_end, b_start, b_end, swapped = instances.T
    in_order = swapped == 0
    assert (b_start[in_order] >= a_end[in_order]).all() and (a_start[~in_order] >= b_end[~in_order]).all()
    gaps = np.where(in_order, b_start - a_end, a_start - b_end)
    assert gaps.max() <= 10, gaps.max()  # at most what truncation cut from one short sentence

    def documents(start, end):
        return set(re.findall(r"document (\d+)", tokenizer.decode(tokens[start:end].tolist())))

    for a0, a1, b0, b1, _ in instances:  # the text from the pair's first token to its last: one document
        assert len(documents(min(a0, b0), max(a1, b1))) == 1
    assert 0.4 < swapped.mean() < 0.6, swapped.mean()
    source = pretraining.load_split(prepared, "train", sop, tokenizer)
    labels = [int(source.example(i)["next_sentence_labels"]) for i in range(len(source))]
    assert labels == swapped[source.rows[:, 0]].tolist()


def test_masking_phases_change_the_training_rate_by_step(prepared, tokenizer, news_config):
    """data.masking_phases="2:0.3,4:0.1": steps 0-1 mask 15% (masked_lm_prob), steps 2-3 30%, from
    step 4 on 10%, in the loader's batches; held-out batches (batch() without a rate) keep 15%;
    packed rows are sized for the highest rate; a malformed schedule is a one-line config error."""
    config = dataclasses.replace(news_config, masking_phases="2:0.3,4:0.1", max_predictions_per_seq=40)
    assert [config.masking_rate(step) for step in range(6)] == [0.15, 0.15, 0.3, 0.3, 0.1, 0.1]
    source = pretraining.load_split(prepared, "train", config, tokenizer)
    iterator = pretraining.batch_iterator(source, 0, 6, 64, num_threads=1)
    for step in range(6):
        batch = next(iterator)
        rate = batch["masked_lm_weights"].sum() / batch["attention_mask"].sum()
        assert abs(rate - config.masking_rate(step)) < 0.01, (step, rate)
        np.testing.assert_array_equal(
            batch["masked_lm_ids"], source.batch(step, 64, masked_lm_prob=config.masking_rate(step))["masked_lm_ids"]
        )
    iterator.close()
    held_out = source.batch(4, 64)
    assert abs(held_out["masked_lm_weights"].sum() / held_out["attention_mask"].sum() - 0.15) < 0.01
    packed = pretraining.load_split(prepared, "train", dataclasses.replace(config, pack_examples=2), tokenizer)
    assert packed.predictions_per_row == int(np.ceil(0.3 * 128)) + 2
    for bad, why in [("2:0.3,1:0.2", "steps must increase"), ("2=0.3", "is not STEP:RATE"), ("5:1.5", "STEP:RATE")]:
        with pytest.raises(ConfigError, match=f"data.masking_phases: .*{why}"):
            validate_data(dataclasses.replace(news_config, masking_phases=bad), ModelConfig())


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a 1-D array."""
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True))


def _masked_runs(batch, row: int, special) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Row `row`'s original ids, what each token became (0 [MASK], 1 kept, 2 random), whether it
    is predicted, and the runs of predicted tokens."""
    n = int(batch["attention_mask"][row].sum())
    k = int(batch["masked_lm_weights"][row].sum())
    positions = batch["masked_lm_positions"][row][:k]
    chosen = np.zeros(n, bool)
    chosen[positions] = True
    originals = batch["input_ids"][row].copy()
    originals[positions] = batch["masked_lm_ids"][row][:k]
    inputs = batch["input_ids"][row][:n]
    kind = np.where(inputs == special.mask, 0, np.where(inputs == originals[:n], 1, 2))
    return originals, kind, chosen, _runs(chosen)


def test_span_masking_masks_whole_word_spans_with_one_choice_each(prepared, tokenizer, news_config):
    """SpanBERT's masking: 15% of the tokens, in runs that start and end on word boundaries, of
    geometric lengths (the truncated Geo(0.2) mean is 3.2 words; runs of adjacent spans merge and
    budget-skipped long spans shorten it: 2.9 measured); each span is all [MASK], all random or
    all kept (97.7% of multi-token runs uniform), where whole-word masking's per-token choices
    mix (62.9% uniform)."""
    special = special_ids(tokenizer)
    is_subword = pretraining.subword_flags(tokenizer)
    config = dataclasses.replace(news_config, span_masking=True, max_predictions_per_seq=40)
    source = pretraining.load_split(prepared, "train", config, tokenizer)
    batch = source.rows_batch(np.arange(300), np.zeros(300, np.int64))
    words_per_run, uniform, multi, chosen_total, tokens_total = [], 0, 0, 0, 0
    for row in range(300):
        originals, kind, chosen, runs = _masked_runs(batch, row, special)
        chosen_total, tokens_total = chosen_total + chosen.sum(), tokens_total + len(chosen)
        for start, end in runs:
            # A word starts at a piece that is not a `##` piece or that follows [CLS] / [SEP] (a
            # truncated segment may begin inside a word).
            after_special = originals[start - 1] in (special.cls, special.sep)
            assert not is_subword[originals[start]] or after_special, (row, start)
            assert end == len(chosen) or not is_subword[originals[end]] or originals[end] == special.sep, (row, end)
            words_per_run.append(int((~is_subword[originals[start:end]]).sum()))
            if end - start > 1:
                multi += 1
                uniform += len(set(kind[start:end].tolist())) == 1
    assert abs(chosen_total / tokens_total - 0.15) < 0.015
    assert 2.5 < np.mean(words_per_run) < 4.0, np.mean(words_per_run)
    assert uniform / multi > 0.9, uniform / multi

    whole_words = dataclasses.replace(config, span_masking=False, whole_word_masking=True)
    batch = pretraining.load_split(prepared, "train", whole_words, tokenizer).rows_batch(
        np.arange(300), np.zeros(300, np.int64)
    )
    uniform = multi = 0
    for row in range(300):
        _, kind, _, runs = _masked_runs(batch, row, special)
        for start, end in runs:
            if end - start > 1:
                multi += 1
                uniform += len(set(kind[start:end].tolist())) == 1
    assert uniform / multi < 0.75, uniform / multi


def test_span_lengths_follow_the_truncated_geometric_distribution():
    """The span sampler's inverse CDF against Geo(0.2) truncated to 1..10, over 200k draws."""
    p, longest = 0.2, 10
    draws = np.random.default_rng(0).random(200_000)
    lengths = pretraining.span_lengths(draws, p, longest)
    pmf = p * (1 - p) ** np.arange(longest)
    pmf /= pmf.sum()
    observed = np.bincount(lengths, minlength=longest + 1)[1:] / len(draws)
    np.testing.assert_allclose(observed, pmf, atol=0.004)
    assert lengths.max() == longest and lengths.min() == 1


def test_batch_size_warmup_reads_rows_in_order_across_sizes(prepared, tokenizer, news_config):
    """train.batch_size_phases="0:4,3:8,5:16" (batch_size 16): steps 0-2 take 4 rows, 3-4 take 8,
    then 16; the batches follow each other through the epoch's order with no row skipped or read
    twice, a loader started at step 4 gives the same batches, and two hosts split each batch."""
    sizes = TrainConfig(batch_size=16, batch_size_phases="0:4,3:8,5:16")
    source = pretraining.load_split(prepared, "train", news_config, tokenizer)
    batches = list(pretraining.batch_iterator(source, 0, 8, 16, num_threads=1, sizes=sizes))
    assert [len(b["input_ids"]) for b in batches] == [4, 4, 4, 8, 8, 16, 16, 16]
    np.testing.assert_array_equal(np.concatenate([b["input_ids"] for b in batches]), source.rows_at(0, 76)["input_ids"])
    later = list(pretraining.batch_iterator(source, 4, 8, 16, num_threads=1, sizes=sizes))
    for a, b in zip(batches[4:], later, strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    hosts = [list(pretraining.batch_iterator(source, 3, 4, 16, 1, k, 2, sizes=sizes))[0] for k in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["input_ids"] for h in hosts]), batches[3]["input_ids"])
    for bad, why in [
        ("0:4,3:8", "the last is train.batch_size=16"),
        ("1:4,3:16", "starts at step 0"),
        ("0:4,0:16", "must increase"),
    ]:
        with pytest.raises(ConfigError, match=why):
            TrainConfig(batch_size=16, batch_size_phases=bad).batch_schedule()
