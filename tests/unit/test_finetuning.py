"""The fine-tuning loop's batches: cut to their longest row without changing a logit; the epoch
order, grouped by length or not."""

import numpy as np


def test_batches_cut_to_their_longest_row_give_the_same_logits():
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from bertjax.config import MeshConfig, ModelConfig
    from bertjax.model.bert import BertForSequenceClassification
    from bertjax.parallel import sharding
    from bertjax.tasks.base import INPUT_KEYS, Split
    from bertjax.training import finetuning

    rng = np.random.default_rng(0)
    n, length = 12, 128
    lengths = rng.integers(5, 40, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    features = {
        "input_ids": (rng.integers(5, 100, (n, length)) * mask).astype(np.int32),
        "token_type_ids": ((np.arange(length)[None] >= lengths[:, None] // 2) * mask).astype(np.int32),
        "attention_mask": mask,
        "labels": rng.integers(0, 2, n).astype(np.float32),
    }
    encoded = Split("test", features, examples=None, source="test")
    batch = finetuning.batch_of(encoded, np.arange(5), 8, multiple=32)
    assert batch["input_ids"].shape == (8, 32 if lengths[:5].max() <= 32 else 64)
    config = ModelConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = BertForSequenceClassification(config, 2)
    ids = jnp.ones((1, length), jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids, ids, ids)["params"])
    predict_fn = jax.jit(lambda p, b: model.apply({"params": p}, *(b[k] for k in INPUT_KEYS)))
    batch_sharding = sharding.batch_sharding(sharding.make_mesh(MeshConfig()))
    full = finetuning.predict(predict_fn, params, encoded, 4, batch_sharding, INPUT_KEYS)
    cut = finetuning.predict(predict_fn, params, encoded, 4, batch_sharding, INPUT_KEYS, pad_to_multiple_of=32)
    np.testing.assert_allclose(cut, full, atol=2e-6)


def test_epoch_order_grouped_by_length_trains_the_same_rows_with_less_padding():
    from bertjax.training import finetuning

    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 128, 2013)
    batch_size, full = 8, 2013 // 8 * 8

    def padded_columns(order):
        return sum(lengths[order[i : i + batch_size]].max() for i in range(0, full, batch_size))

    for epoch in (0, 1):
        plain = finetuning.epoch_order(lengths, batch_size, 3, epoch, group_by_length=False)
        grouped = finetuning.epoch_order(lengths, batch_size, 3, epoch, group_by_length=True)
        np.testing.assert_array_equal(plain, np.random.default_rng([3, 6, epoch]).permutation(2013))
        # The same rows are trained (and the same remainder left out) as without grouping.
        np.testing.assert_array_equal(np.sort(grouped[:full]), np.sort(plain[:full]))
        np.testing.assert_array_equal(grouped[full:], plain[full:])
        # Each batch comes from one group of 50 batches sorted by length: a narrow spread.
        spreads = [np.ptp(lengths[grouped[i : i + batch_size]]) for i in range(0, full, batch_size)]
        assert np.median(spreads) <= 5, np.median(spreads)
        assert padded_columns(grouped) < 0.6 * padded_columns(plain)
        # Batches from every part of the length range, in a shuffled order (not shortest first).
        firsts = lengths[grouped[:full:batch_size]]
        assert abs(np.corrcoef(np.arange(len(firsts)), firsts)[0, 1]) < 0.2
    np.testing.assert_array_equal(
        finetuning.epoch_order(lengths, batch_size, 3, 1, True), finetuning.epoch_order(lengths, batch_size, 3, 1, True)
    )
    assert not np.array_equal(
        finetuning.epoch_order(lengths, batch_size, 3, 0, True), finetuning.epoch_order(lengths, batch_size, 3, 1, True)
    )
