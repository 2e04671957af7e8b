"""Sequence packing: the plan, the packed rows, and the same loss as unpacked rows."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from bertjax.config import DataConfig, ModelConfig
from bertjax.data import pretraining as pretraining_data
from bertjax.data.tokenizer import load_tokenizer
from bertjax.model.bert import BertForPreTraining, attention_allowed, position_ids
from bertjax.training import pretraining


def test_pack_places_every_item_once_and_rows_fit():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(5, 40, 300), np.full(50, 128), rng.integers(60, 128, 50)])
    plan = pretraining_data.pack(lengths, 128, 3)
    items = plan[plan >= 0]
    assert sorted(items.tolist()) == list(range(len(lengths)))
    assert ((plan >= 0).sum(1) <= 3).all() and ((plan >= 0).sum(1) >= 1).all()
    row_lengths = np.where(plan >= 0, lengths[np.maximum(plan, 0)], 0).sum(1)
    assert row_lengths.max() <= 128
    assert len(plan) < 0.5 * len(lengths)
    # Within 20% of a known optimum: 60 items of 40 and 30 of 48 fill exactly 30 rows of (40, 40, 48).
    assert len(pretraining_data.pack(np.array([40] * 60 + [48] * 30), 128, 3)) <= 36
    np.testing.assert_array_equal(plan, pretraining_data.pack(lengths, 128, 3))
    with pytest.raises(ValueError, match="more than a row"):
        pretraining_data.pack(np.array([129]), 128, 2)


def test_position_ids_and_attention_follow_segments():
    segments = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(position_ids(segments), [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7]])
    allowed = np.asarray(attention_allowed(segments))[:, 0]
    assert allowed[0, 3].tolist() == [False, False, False, True, True, False, False, False]
    assert allowed[0, 6].tolist() == [True] * 6 + [False] * 2  # padding queries: outputs unused
    assert allowed[1, 0].tolist() == [True] * 5 + [False] * 3  # a 0/1 mask is a key mask


@pytest.fixture(scope="module")
def short_pairs(sample_files, tmp_path_factory):
    """A prepared split with many short pairs (every chunk aims at a random length)."""
    config = DataConfig(
        train_files=(str(sample_files["news"]),),
        corpus_format="paragraphs",
        vocab_file=str(sample_files["vocab"]),
        max_documents=60,
        max_seq_length=128,
        short_seq_prob=1.0,
    )
    tokenizer = load_tokenizer(config.vocab_file)
    prepared = pretraining_data.prepare(config, tokenizer, tmp_path_factory.mktemp("prepared"))
    return config, tokenizer, prepared


def test_packed_rows_hold_the_unpacked_examples(short_pairs):
    config, tokenizer, prepared = short_pairs
    single = pretraining_data.load_split(prepared, "train", config, tokenizer)
    packed = pretraining_data.load_split(prepared, "train", dataclasses.replace(config, pack_examples=3), tokenizer)
    assert len(packed) < 0.8 * len(single) and packed.fill > 1.25 * single.fill
    row = int(np.argmax((packed.rows >= 0).sum(1)))
    assert (packed.rows[row] >= 0).sum() >= 2
    example = packed.example(row, epoch=1)
    offset = 0
    for slot, instance in enumerate(i for i in packed.rows[row] if i >= 0):
        alone = single.example(int(instance), epoch=1)
        n = int(alone["attention_mask"].sum())
        np.testing.assert_array_equal(example["input_ids"][offset : offset + n], alone["input_ids"][:n])
        np.testing.assert_array_equal(example["token_type_ids"][offset : offset + n], alone["token_type_ids"][:n])
        assert (example["attention_mask"][offset : offset + n] == slot + 1).all()
        assert example["next_sentence_positions"][slot] == offset
        assert example["next_sentence_labels"][slot] == alone["next_sentence_labels"]
        offset += n
    assert (example["attention_mask"][offset:] == 0).all()
    assert example["masked_lm_weights"].sum() == sum(
        single.example(int(i), epoch=1)["masked_lm_weights"].sum() for i in packed.rows[row] if i >= 0
    )


@pytest.fixture(scope="module")
def documents(sample_files, tmp_path_factory):
    """A prepared split of document runs (masked LM only): full rows, and each document's short end."""
    config = DataConfig(
        train_files=(str(sample_files["news"]),),
        corpus_format="sentences",
        vocab_file=str(sample_files["vocab"]),
        max_documents=60,
        max_seq_length=128,
        example_format="documents",
    )
    tokenizer = load_tokenizer(config.vocab_file)
    prepared = pretraining_data.prepare(config, tokenizer, tmp_path_factory.mktemp("prepared"))
    return config, tokenizer, prepared


@pytest.mark.parametrize(
    "examples, knobs",
    [
        ("short_pairs", {}),
        ("short_pairs", dict(position_embedding_type="alibi")),
        ("short_pairs", dict(position_embedding_type="scaled_sinusoidal", layer_norm_position="pre")),
        ("documents", dict(position_embedding_type="rope", local_attention=16, global_attn_every_n_layers=2)),
    ],
    ids=["bert", "alibi", "scaled-sinusoidal", "modernbert-documents"],
)
def test_packing_gives_the_same_loss_as_unpacked_rows(request, examples, knobs):
    """Every position kind restarts at each packed example (RoPE, ALiBi and the sliding window
    within its example too), sentence pairs and document runs alike."""
    config, tokenizer, prepared = request.getfixturevalue(examples)
    single = pretraining_data.load_split(prepared, "train", config, tokenizer)
    packed = pretraining_data.load_split(prepared, "train", dataclasses.replace(config, pack_examples=3), tokenizer)
    shared = np.flatnonzero((packed.rows >= 0).sum(1) >= 2)
    rows = [int(r) for r in shared[:5]] + [0]  # five shared rows and one with a single pair
    instances = [int(i) for r in rows for i in packed.rows[r] if i >= 0]
    assert len(instances) > len(rows)

    def stack(examples):
        return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}

    unpacked_batch = stack([single.example(i, epoch=0) for i in instances])
    packed_batch = stack([packed.example(r, epoch=0) for r in rows])
    model_config = ModelConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        **knobs,
    )
    model = BertForPreTraining(model_config)
    ids = jnp.ones((1, 128), jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids, ids, ids, jnp.zeros((1, 2), jnp.int32))["params"])

    @jax.jit
    def loss_sums(batch):
        return pretraining.losses(params, batch, None, (jnp.ones(()), jnp.ones(())), model=model)[1]

    def sums(batch):
        return {k: float(v) for k, v in loss_sums(batch).items()}

    a, b = sums(unpacked_batch), sums(packed_batch)
    assert a["mlm_weight"] == b["mlm_weight"] > 0 and a["nsp_count"] == b["nsp_count"] == len(instances)
    assert a["mlm_correct"] == b["mlm_correct"] and a["nsp_correct"] == b["nsp_correct"]
    np.testing.assert_allclose(b["mlm_loss"], a["mlm_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["nsp_loss"], a["nsp_loss"], rtol=1e-5)
    # Without the segment mask the packed rows would see each other: the loss changes.
    leaky = dict(packed_batch, attention_mask=(packed_batch["attention_mask"] > 0).astype(jnp.int32))

    @jax.jit
    def mlm_logits(batch):
        keys = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions")
        return model.apply({"params": params}, *(batch[k] for k in keys), True, batch["next_sentence_positions"])[0]

    assert float(jnp.abs(mlm_logits(leaky) - mlm_logits(packed_batch)).max()) > 1e-3
