"""ELECTRA's objective: replaced-token detection with a jointly trained generator.

One (micro)batch, inside the jitted step: the generator reads the masked rows and predicts the
masked tokens (its MLM loss); a token is sampled from its logits at every masked position (no
gradient flows through the sample); the discriminator reads the rows with those samples in place
and tells each real token replaced or original (a sampled token equal to the original counts as
original, as in the paper); its loss is the sigmoid cross-entropy over the real tokens. The
optimised loss is MLM + `discriminator_weight` x that loss, each normalised by the whole batch's
counts, so gradient accumulation equals the full batch as for the other objectives.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bertjax.training import update

Array = jax.Array
Batch = dict[str, Array]
EVAL_SAMPLE_KEY = 0  # evaluation samples with a fixed key, so held-out metrics are repeatable


def replace_masked(input_ids: Array, positions: Array, weights: Array, tokens: Array) -> Array:
    """`input_ids` with `tokens` [batch, predictions] written at `positions` where `weights` > 0
    (padding slots, at position 0, leave the row as it is)."""
    input_ids = jnp.asarray(input_ids)
    rows = jnp.arange(input_ids.shape[0])[:, None]
    current = jnp.take_along_axis(input_ids, positions, axis=1)
    return input_ids.at[rows, positions].set(jnp.where(weights > 0, tokens, current).astype(input_ids.dtype))


def losses(
    params: Any,
    batch: Batch,
    rng: jax.Array | None,
    denominators: tuple[jax.Array, jax.Array],
    *,
    model: nn.Module,
    discriminator_weight: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of one (micro)batch, normalised by the whole batch's (masked, real) token counts, and
    its metric sums."""
    deterministic = rng is None
    if deterministic:
        generator_rng = discriminator_rng = None
        sample_rng = jax.random.key(EVAL_SAMPLE_KEY)
    else:
        generator_rng, sample_rng, discriminator_rng = jax.random.split(rng, 3)
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    positions, weights = batch["masked_lm_positions"], batch["masked_lm_weights"]
    mlm_logits = model.apply(
        {"params": params},
        ids,
        types,
        mask,
        positions,
        deterministic,
        method="generate",
        rngs=None if deterministic else {"dropout": generator_rng},
    )
    mlm_xent = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, batch["masked_lm_ids"]) * weights

    sampled = jax.random.categorical(sample_rng, jax.lax.stop_gradient(mlm_logits))
    corrupted = replace_masked(ids, positions, weights, sampled)
    original = replace_masked(ids, positions, weights, batch["masked_lm_ids"])
    replaced = (corrupted != original).astype(jnp.float32)
    logits = model.apply(
        {"params": params},
        corrupted,
        types,
        mask,
        deterministic,
        method="discriminate",
        rngs=None if deterministic else {"dropout": discriminator_rng},
    )
    real = (mask > 0).astype(jnp.float32)
    rtd_xent = optax.sigmoid_binary_cross_entropy(logits, replaced) * real
    sums = {
        "mlm_loss": mlm_xent.sum(),
        "mlm_correct": ((mlm_logits.argmax(-1) == batch["masked_lm_ids"]) * weights).sum(),
        "mlm_weight": weights.sum(),
        "rtd_loss": rtd_xent.sum(),
        "rtd_correct": (((logits > 0) == (replaced > 0)) * real).sum(),
        "rtd_count": real.sum(),
        "replaced": (replaced * real).sum(),
        "replaced_found": ((logits > 0) * replaced * real).sum(),
        "rows": (real.sum(-1) > 0).sum().astype(jnp.float32),
    }
    mlm_denominator, token_denominator = denominators
    loss = sums["mlm_loss"] / mlm_denominator + discriminator_weight * sums["rtd_loss"] / token_denominator
    return loss, sums


def denominators(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """The whole batch's masked-token and real-token counts (at least 1)."""
    real = (batch["attention_mask"] > 0).sum().astype(jnp.float32)
    return jnp.maximum(batch["masked_lm_weights"].sum(), 1.0), jnp.maximum(real, 1.0)


def summarise(sums: dict[str, Any], discriminator_weight: float) -> dict[str, Any]:
    """Means from summed metrics: the generator's MLM loss and accuracy, the discriminator's
    replaced-token loss and accuracy over real tokens, the share of tokens the generator replaced
    and the share of those the discriminator found."""
    mlm_weight = jnp.maximum(sums["mlm_weight"], 1.0)
    tokens = jnp.maximum(sums["rtd_count"], 1.0)
    mlm_loss, rtd_loss = sums["mlm_loss"] / mlm_weight, sums["rtd_loss"] / tokens
    return {
        "loss": mlm_loss + discriminator_weight * rtd_loss,
        "mlm_loss": mlm_loss,
        "mlm_accuracy": sums["mlm_correct"] / mlm_weight,
        "rtd_loss": rtd_loss,
        "rtd_accuracy": sums["rtd_correct"] / tokens,
        "replaced_fraction": sums["replaced"] / tokens,
        "replaced_recall": sums["replaced_found"] / jnp.maximum(sums["replaced"], 1.0),
    }


def objective(model: nn.Module, discriminator_weight: float = 50.0) -> update.Objective:
    """MLM + discriminator_weight x replaced-token detection, as the shared update takes it."""
    return update.Objective(
        loss=functools.partial(losses, model=model, discriminator_weight=discriminator_weight),
        denominators=denominators,
        summarise=functools.partial(summarise, discriminator_weight=discriminator_weight),
    )
