"""ELECTRA's replaced-token detection: the model's two halves, the loss worked out by hand,
where the gradients go, and gradient accumulation."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bertjax.config import ConfigError, ModelConfig
from bertjax.model.electra import ElectraForPreTraining
from bertjax.training import electra, pretraining, update

# The discriminator: embedding tables 16 wide (factorised, as ELECTRA-small's), hidden 32.
MODEL = ModelConfig(
    vocab_size=53,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
    embedding_size=16,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _batch(rng, batch=6, length=12, predictions=3):
    lengths = rng.integers(6, length + 1, size=batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(5, MODEL.vocab_size, (batch, length)) * mask).astype(np.int32)
    positions = np.stack([rng.choice(np.arange(1, 5), predictions, replace=False) for _ in range(batch)])
    positions = np.sort(positions, axis=1).astype(np.int32)
    weights = np.ones((batch, predictions), np.float32)
    weights[::2, -1] = 0  # a padding slot: position 0 in the data
    positions[::2, -1] = 0
    labels = np.take_along_axis(ids, positions, axis=1)
    ids[np.arange(batch)[:, None], positions] = np.where(weights > 0, 3, ids[np.arange(batch)[:, None], positions])
    return {
        "input_ids": ids,  # the masked rows: [MASK] (3) at the chosen positions
        "token_type_ids": np.zeros_like(ids),
        "attention_mask": mask,
        "masked_lm_positions": positions,
        "masked_lm_ids": labels.astype(np.int32),
        "masked_lm_weights": weights,
    }


def _model(size=0.5):
    return ElectraForPreTraining(MODEL, MODEL.electra_generator(size))


def _params(model):
    return nn.meta.unbox(jax.jit(pretraining.param_init(model, 12))(jax.random.key(0)))


def test_generator_is_narrower_and_shares_the_embedding_tables():
    """generator_size=0.5: width, heads and feed-forward halved, the same depth; its only embedding
    parameter is its projection from the shared 16-wide tables to its width (none when equal)."""
    generator = MODEL.electra_generator(0.5)
    assert (generator.hidden_size, generator.num_attention_heads, generator.intermediate_size) == (16, 2, 32)
    assert generator.num_hidden_layers == 2 and generator.embedding_width == 16
    flat = traverse_util.flatten_dict(_params(_model(0.5)), sep="/")
    assert not any(p.startswith("generator/embeddings") for p in flat)  # 16 -> 16: nothing to project
    flat = traverse_util.flatten_dict(_params(_model(0.75)), sep="/")
    assert sorted(p for p in flat if p.startswith("generator/embeddings")) == [
        "generator/embeddings/embeddings_project/bias",
        "generator/embeddings/embeddings_project/kernel",
    ]
    assert flat["generator/layer_0/attention/query/kernel"].shape == (24, 3, 8)
    assert flat["mlm_head/transform/kernel"].shape == (24, 16)  # back to the tied table's width
    assert {p.split("/")[0] for p in flat} == {"bert", "generator", "mlm_head", "discriminator_head"}
    with pytest.raises(ConfigError, match="generator's width 10 does not split into 3 attention heads"):
        dataclasses.replace(MODEL, num_attention_heads=10).electra_generator(0.3)


def test_loss_is_the_generators_mlm_plus_fifty_times_the_discriminators():
    """The objective's loss on a batch, evaluated (a fixed sampling key), against the same loss
    worked out here in numpy from the two halves' logits: the generator's cross-entropy at the
    masked positions; its samples written into the rows; a token replaced where the sample
    differs from the original (a sample equal to it counts as original); the discriminator's
    sigmoid cross-entropy over real tokens."""
    model = _model()
    params = _params(model)
    batch = _batch(np.random.default_rng(0))
    loss, sums = electra.losses(
        params, batch, None, electra.denominators(batch), model=model, discriminator_weight=50.0
    )

    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions, weights, labels = batch["masked_lm_positions"], batch["masked_lm_weights"], batch["masked_lm_ids"]
    logits = np.asarray(model.apply({"params": params}, ids, ids * 0, mask, positions, method="generate"), np.float64)
    log_probs = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    mlm = -(np.take_along_axis(log_probs, labels[..., None], -1)[..., 0] * weights).sum() / weights.sum()
    sampled = np.asarray(
        jax.random.categorical(jax.random.key(electra.EVAL_SAMPLE_KEY), jnp.asarray(logits, jnp.float32))
    )
    original, corrupted = ids.copy(), ids.copy()
    for row, slot in zip(*np.nonzero(weights)):
        original[row, positions[row, slot]] = labels[row, slot]
        corrupted[row, positions[row, slot]] = sampled[row, slot]
    replaced = (corrupted != original) & (mask > 0)
    z = np.asarray(model.apply({"params": params}, corrupted, ids * 0, mask, method="discriminate"), np.float64)
    bce = np.logaddexp(0, z) - z * replaced  # -log sigmoid(z) if replaced, -log(1 - sigmoid(z)) if not
    rtd = (bce * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(loss), mlm + 50.0 * rtd, rtol=1e-5)
    assert float(sums["replaced"]) == replaced.sum() > 0
    summary = electra.summarise(sums, 50.0)
    np.testing.assert_allclose(float(summary["rtd_loss"]), rtd, rtol=1e-5)
    np.testing.assert_allclose(float(summary["replaced_fraction"]), replaced.sum() / mask.sum(), rtol=1e-6)


def test_replaced_tokens_equal_to_the_original_count_as_original():
    """`replace_masked` writes the samples at real slots only; the labels compare to the original."""
    ids = jnp.asarray([[2, 3, 3, 9, 0]])
    positions, weights = jnp.asarray([[1, 2, 0]]), jnp.asarray([[1.0, 1.0, 0.0]])
    original = electra.replace_masked(ids, positions, weights, jnp.asarray([[7, 8, 99]]))
    corrupted = electra.replace_masked(ids, positions, weights, jnp.asarray([[7, 5, 99]]))
    assert original.tolist() == [[2, 7, 8, 9, 0]] and corrupted.tolist() == [[2, 7, 5, 9, 0]]
    assert (corrupted != original).tolist() == [[False, False, True, False, False]]


def test_the_discriminators_loss_trains_no_generator_parameter():
    """The sample is drawn without a gradient: the generator's parameters get the MLM loss's
    gradient whatever the discriminator's weight, and with weight 0 the discriminator's layers
    and head get none; the shared embedding tables get both."""
    model = _model()
    params = _params(model)
    batch = _batch(np.random.default_rng(1))
    key = jax.random.key(3)

    def grads(weight):
        def loss(p):
            return electra.losses(p, batch, key, electra.denominators(batch), model=model, discriminator_weight=weight)[
                0
            ]

        return traverse_util.flatten_dict(jax.jit(jax.grad(loss))(params), sep="/")

    heavy, light, none = grads(50.0), grads(1.0), grads(0.0)
    for path in heavy:
        if path.startswith(("generator/", "mlm_head/")):
            np.testing.assert_allclose(heavy[path], none[path], atol=1e-7, err_msg=path)
            assert np.abs(none[path]).max() > 0, path
        elif path.startswith(("bert/layer_", "discriminator_head/")):
            assert np.abs(none[path]).max() == 0 and np.abs(heavy[path]).max() > 0, path
    table = "bert/embeddings/word_embeddings/embedding"
    assert np.abs(none[table]).max() > 0 and not np.allclose(heavy[table], light[table])


def test_gradient_accumulation_equals_the_full_batch():
    """Four microbatches give the full batch's generator loss and accuracy exactly (normalised by
    the whole batch's counts); each microbatch draws its own samples from its own key, so the
    discriminator's loss is another draw of the same quantity."""
    from bertjax.config import MeshConfig, OptimConfig
    from bertjax.parallel import sharding
    from bertjax.training import optim
    from bertjax.training.state import create_sharded_state

    model = _model()
    tx, schedule = optim.make_optimizer(OptimConfig(warmup_steps=2, learning_rate=1e-3), 10)
    mesh = sharding.make_mesh(MeshConfig())
    state, _ = create_sharded_state(jax.random.key(0), pretraining.param_init(model, 12), tx, mesh, MeshConfig())
    batch = _batch(np.random.default_rng(2), batch=8)
    objective = electra.objective(model, 50.0)

    def step(count):
        return jax.jit(
            lambda s, b: update.train_step(
                s, b, jax.random.key(1), objective=objective, tx=tx, schedule=schedule, grad_accum_steps=count
            )
        )

    _, full = step(1)(state, batch)
    _, acc = step(4)(state, batch)
    for name in ("mlm_loss", "mlm_accuracy"):
        np.testing.assert_allclose(acc[name], full[name], rtol=2e-5, err_msg=name)
    assert np.isfinite(float(acc["loss"])) and abs(float(acc["rtd_loss"]) - float(full["rtd_loss"])) < 0.05
