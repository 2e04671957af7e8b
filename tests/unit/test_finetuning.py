"""The fine-tuning loop's batches: cut to their longest row without changing a logit, to widths
fitted to the data; the epoch order, grouped by length or not; the fine-tuning configs' keys."""

import functools
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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
    widths = finetuning.batch_widths(np.zeros(0), 32, length)
    assert widths == (32, 64, 96, 128)
    batch = finetuning.batch_of(encoded, np.arange(5), 8, widths)
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
    cut = finetuning.predict(predict_fn, params, encoded, 4, batch_sharding, INPUT_KEYS, widths=widths)
    np.testing.assert_allclose(cut, full, atol=2e-6)


def test_batch_widths_leave_the_fewest_padding_columns_of_any_choice():
    import itertools

    from bertjax.training import finetuning

    def columns(widths, maxima):
        return sum(min(w for w in widths if w >= m) for m in maxima)

    rng = np.random.default_rng(2)
    for multiple, length in ((16, 128), (24, 100)):
        candidates = finetuning.batch_widths(np.zeros(0), multiple, length)
        assert candidates == (*range(multiple, length, multiple), length)
        for trial in range(3):
            maxima = np.minimum(rng.gamma(4.0, length / 6, 60).astype(int) + 1, length)
            for buckets in (1, 2, 3, 5):
                widths = finetuning.batch_widths(maxima, multiple, length, buckets)
                assert len(widths) <= buckets and widths[-1] == length and set(widths) <= set(candidates)
                best = min(
                    columns((*others, length), maxima)
                    for k in range(buckets)
                    for others in itertools.combinations(candidates[:-1], k)
                )
                assert columns(widths, maxima) == best, (multiple, trial, buckets, widths)
            assert finetuning.batch_widths(maxima, multiple, length, len(candidates)) == candidates


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


def test_packed_tagging_batches_give_the_loss_gradients_and_outputs_of_padded_rows(tmp_path, vocab_file):
    """task.packing: a batch's sentences one after another in rows of max_seq_length (attention and
    positions kept within each sentence) train and predict as one padded row per sentence."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from bertjax.config import MeshConfig, ModelConfig, TaskConfig
    from bertjax.data.tokenizer import load_tokenizer
    from bertjax.parallel import sharding
    from bertjax.tasks.tagging import TaggingTask
    from bertjax.training import finetuning

    rng = np.random.default_rng(0)
    words = "the court said on monday that paris and london would meet again in march".split()
    tags = ("O", "B-LOC", "I-LOC", "B-PER")
    lines = []
    for _ in range(14):
        for _ in range(rng.integers(2, 15)):
            lines.append(f"{rng.choice(words)} {rng.choice(tags)}")
        lines.append("")
    conll = tmp_path / "train.txt"
    conll.write_text("\n".join(lines) + "\n")
    task = TaggingTask(TaskConfig(name="ner", train_file=str(conll), dev_file=str(conll), test_file=""), 0)
    split = task.load(load_tokenizer(str(vocab_file)), 48).train
    config = ModelConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = task.model(config)
    ids = jnp.ones((1, 48), jnp.int32)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids, ids, ids)["params"])
    params["token_classifier"]["bias"] = jnp.arange(len(task.labels), dtype=jnp.float32) * 0.1

    rows = rng.permutation(len(split))[:12]
    padded = finetuning.batch_of(split, rows, len(rows))
    packed, plan = finetuning.packed_batch(split, rows, 48, 4, task.feature_padding)
    assert len(packed["weights"]) % 4 == 0 and len(packed["weights"]) < len(rows)
    assert sorted(plan[plan >= 0].tolist()) == list(range(len(rows)))
    assert packed["attention_mask"].max() > 1  # several sentences share a row

    objective = finetuning.objective(task, model)

    def loss(p, batch):
        return objective.loss(p, batch, None, objective.denominators(batch))[0]

    loss_and_grads = jax.jit(jax.value_and_grad(loss))
    (loss_padded, grads_padded), (loss_packed, grads_packed) = (loss_and_grads(params, b) for b in (padded, packed))
    np.testing.assert_allclose(loss_packed, loss_padded, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_packed), jax.tree.leaves(grads_padded)):
        np.testing.assert_allclose(a, b, atol=2e-6)

    predict_fn = jax.jit(functools.partial(task.predict, model=model))
    batch_sharding = sharding.batch_sharding(sharding.make_mesh(MeshConfig()))
    keys = task.input_keys
    plain = finetuning.predict(predict_fn, params, split, 4, batch_sharding, keys, per_token=True)
    packed_out = finetuning.predict(predict_fn, params, split, 4, batch_sharding, keys, per_token=True, packing=48)
    inside = split.features["attention_mask"] > 0
    np.testing.assert_allclose(packed_out[inside], plain[inside], atol=2e-5)
    assert not packed_out[~inside].any()


def test_demo_configs_compute_in_float32_or_in_bfloat16_with_their_bf16_argument():
    import pytest

    from bertjax import config as config_lib

    for name in ("demo_qa.py", "demo_ner.py"):
        module = config_lib.load_config_module(CONFIGS / name)
        plain = config_lib.finetune_config_from_dict(module.get_config())
        bf16 = config_lib.finetune_config_from_dict(module.get_config("bf16"))
        assert (plain.model.dtype, bf16.model.dtype) == ("float32", "bfloat16")
        assert bf16.optim == plain.optim and bf16.train == plain.train and bf16.task == plain.task
        with pytest.raises(ValueError, match="unknown config argument 'fp16'"):
            module.get_config("fp16")


def test_fine_tuning_configs_expose_the_batch_width_keys_to_the_command_line():
    from bertjax import config as config_lib

    for name in ("glue.py", "textclf.py", "r8.py", "ner.py", "squad.py", "demo_ner.py", "demo_qa.py"):
        task = config_lib.load_config_module(CONFIGS / name).get_config().task
        assert {"pad_to_multiple_of", "length_buckets", "packing"} <= set(task), name
