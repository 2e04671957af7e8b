"""Optimizers and learning-rate schedules (optax): AdamW, LAMB or StableAdamW, warmup then decay
(or warmup-stable-decay), clipping.

Weight decay skips biases and LayerNorm parameters, as in google-research/bert. LAMB's layer-wise
trust ratio skips them too, as the LAMB implementations used for BERT do: tensorflow_addons'
(`exclude_from_layer_adaptation` defaults to the weight-decay exclusions) and NVIDIA's FusedLAMB
(no adaptation where weight decay is 0, unless `use_nvlamb`). `optax.lamb` alone adapts every
parameter.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bertjax.config import OptimConfig
from bertjax.weights.param_tree import STACKED_PREFIX

NO_DECAY_NAMES = ("bias", "scale")  # Dense/LayerNorm biases and LayerNorm scales: OptimConfig's default


def decay_curve(peak: float, end: float, steps: int, shape: str) -> optax.Schedule:
    """From `peak` at step 0 to `end` at step `steps` (and after): linear, cosine, or 1-sqrt
    (end + (peak - end) (1 - sqrt(t / steps)), the cooldown of Hägele et al. 2024 and ModernBERT)."""

    def schedule(count: Any) -> jax.Array:
        done = jnp.clip(jnp.asarray(count, jnp.float32) / max(steps, 1), 0.0, 1.0)
        if shape == "linear":
            left = 1.0 - done
        elif shape == "cosine":
            left = 0.5 * (1.0 + jnp.cos(jnp.pi * done))
        else:  # "1-sqrt"
            left = 1.0 - jnp.sqrt(done)
        return end + (peak - end) * left

    return schedule


def learning_rate_schedule(optim: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to the peak learning rate (from `initial_learning_rate_fraction` of it, 0 by
    default), then linear / polynomial / cosine decay to `final_learning_rate_fraction` of the peak
    (0 by default), or constant; or, for "wsd", the peak held until the last `decay_fraction` of
    `total_steps`, which decay as `decay_shape` says."""
    warmup = round(optim.warmup_fraction * total_steps) if optim.warmup_fraction > 0 else optim.warmup_steps
    warmup = min(warmup, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    peak, end = optim.learning_rate, optim.learning_rate * optim.final_learning_rate_fraction
    if optim.schedule == "wsd":
        cooldown = min(round(optim.decay_fraction * total_steps), total_steps - warmup)
        stable = total_steps - warmup - cooldown
        after = optax.join_schedules(
            [optax.constant_schedule(peak), decay_curve(peak, end, cooldown, optim.decay_shape)], [stable]
        )
    elif optim.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    elif optim.schedule == "polynomial":  # (1 - t/T)^power, as in LAMB's BERT recipe (power 0.5)
        after = optax.polynomial_schedule(peak, end, optim.decay_power, decay_steps)
    elif optim.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=optim.final_learning_rate_fraction)
    else:
        after = optax.constant_schedule(peak)
    if warmup == 0:
        return after
    start = peak * optim.initial_learning_rate_fraction
    return optax.join_schedules([optax.linear_schedule(start, peak, warmup), after], [warmup])


def _shifted(schedule: optax.Schedule, offset: int) -> optax.Schedule:
    """The schedule as seen from step `offset` on (a run that continues a longer schedule)."""

    def shifted(count: Any) -> Any:
        return schedule(count + offset)

    return shifted


def decay_mask(params: Any, excluded: tuple[str, ...] = NO_DECAY_NAMES) -> Any:
    """True where weight decay applies: every parameter whose name is not in `excluded` (by default
    biases and LayerNorm scales)."""

    def decays(path: tuple[Any, ...], _: Any) -> bool:
        name = getattr(path[-1], "key", None)
        return name not in excluded

    return jax.tree_util.tree_map_with_path(decays, params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def _mask(optim: OptimConfig) -> Any:
    return functools.partial(decay_mask, excluded=tuple(optim.exclude_from_weight_decay))


def _zero_adam_state(params: Any) -> optax.ScaleByAdamState:
    """optax's Adam state at step 0: the layout every Adam variant here keeps, so checkpoints of one
    can be read by another."""
    zeros = optax.tree_utils.tree_zeros_like(params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)


def scale_by_adam_uncorrected(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam's direction m / (sqrt(v) + eps) on moments without bias correction, as
    google-research/bert's AdamWeightDecayOptimizer computes it (optax's state layout, so
    checkpoints are the same shape either way)."""

    def update(updates: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple[Any, Any]:
        del params
        mu = optax.tree_utils.tree_update_moment(updates, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

    return optax.GradientTransformation(_zero_adam_state, update)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Gradients scaled by max_norm / max(||g||, max_norm): one scalar multiply, as
    tf.clip_by_global_norm (google-research/bert) and torch's clip_grad_norm_ do it, with optax's
    state. optax.clip_by_global_norm selects per element between g and g / ||g|| * max_norm, and
    XLA then writes the clipped gradient out before Adam's moments read it: one more pass over
    every parameter per step (docs/performance.md)."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        norm = optax.global_norm(updates)
        scale = max_norm / jnp.maximum(norm, max_norm)
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.ClipByGlobalNormState(), update)


def _adam_direction(optim: OptimConfig) -> optax.GradientTransformation:
    if optim.bias_correction:
        return optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps)
    return scale_by_adam_uncorrected(optim.b1, optim.b2, optim.eps)


_STACKED_KEYS = STACKED_PREFIX.strip("/").split("/")


def _stacked_layer(path: tuple[Any, ...]) -> bool:
    """Whether a parameter path is a scanned encoder's (`hf_weights.STACKED_PREFIX`, one slice per layer)."""
    keys = [getattr(key, "key", None) for key in path[: len(_STACKED_KEYS)]]
    return keys == _STACKED_KEYS


def scale_by_trust_ratio_per_layer() -> optax.GradientTransformation:
    """optax.scale_by_trust_ratio (||w|| / ||u||, 1 where either is 0), with a scanned encoder's
    stacked parameters taken one layer at a time, so LAMB's ratios are per parameter as without
    the scan."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        def norm(x: jax.Array, stacked: bool) -> jax.Array:
            if not stacked:
                return optax.safe_norm(x, 0.0)
            return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)), keepdims=True))

        def scaled(path: tuple[Any, ...], u: jax.Array, w: jax.Array) -> jax.Array:
            stacked = _stacked_layer(path)
            param_norm, update_norm = norm(w, stacked), norm(u, stacked)
            ratio = jnp.where((param_norm == 0) | (update_norm == 0), jnp.ones([], w.dtype), param_norm / update_norm)
            return u * ratio

        return jax.tree_util.tree_map_with_path(scaled, updates, params), state

    return optax.GradientTransformation(lambda params: optax.ScaleByTrustRatioState(), update)


def lamb(schedule: optax.Schedule, optim: OptimConfig) -> optax.GradientTransformation:
    """LAMB (You et al. 2019): Adam directions plus decoupled weight decay, each parameter's step
    scaled by its trust ratio ||w|| / ||step||, except on the parameters without weight decay."""
    return optax.chain(
        _adam_direction(optim),
        optax.add_decayed_weights(optim.weight_decay, mask=_mask(optim)),
        optax.masked(scale_by_trust_ratio_per_layer(), _mask(optim)),
        optax.scale_by_learning_rate(schedule),
    )


def _debiased_beta(beta: float, count: jax.Array) -> jax.Array:
    """beta (1 - beta^(t-1)) / (1 - beta^t): the moment update that keeps the moments bias-corrected."""
    t = count.astype(jnp.float32)
    return beta * (1.0 - beta ** (t - 1.0)) / (1.0 - beta**t)


def stable_adamw(schedule: optax.Schedule, optim: OptimConfig) -> optax.GradientTransformation:
    """StableAdamW (Wortsman et al. 2023; torch-optimi's, which ModernBERT trains with): AdamW with
    bias-corrected moments whose learning rate on each tensor is divided by max(1, RMS), RMS =
    sqrt(mean(g^2 / max(v, eps^2))) over the tensor (one layer's slice of a scanned encoder), both
    for the Adam step and for the decoupled weight decay. optax (0.2.8) and optax.contrib have no
    such update clipping, hence this transformation; its state is optax's Adam state."""
    b1, b2, eps, weight_decay = optim.b1, optim.b2, optim.eps, optim.weight_decay
    mask = _mask(optim)

    def update(grads: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple[Any, Any]:
        count = optax.safe_increment(state.count)
        beta1, beta2 = _debiased_beta(b1, count), _debiased_beta(b2, count)
        mu = jax.tree.map(lambda m, g: beta1 * m + (1.0 - beta1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: beta2 * v + (1.0 - beta2) * jnp.square(g), state.nu, grads)
        learning_rate = schedule(state.count)

        def step(path: tuple[Any, ...], g: jax.Array, m: jax.Array, v: jax.Array, w: jax.Array, decays: bool) -> Any:
            axes = tuple(range(1, g.ndim)) if _stacked_layer(path) else None
            rms = jnp.sqrt(jnp.mean(jnp.square(g) / jnp.maximum(v, eps**2), axis=axes, keepdims=axes is not None))
            rate = learning_rate / jnp.maximum(1.0, rms)
            direction = m / (jnp.sqrt(v) + eps)
            if decays and weight_decay:
                direction = direction + weight_decay * w
            return (-rate * direction).astype(w.dtype)

        updates = jax.tree_util.tree_map_with_path(step, grads, mu, nu, params, mask(params))
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(_zero_adam_state, update)


def make_optimizer(
    optim: OptimConfig, total_steps: int, external_rate: bool = False
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain (clipping, then AdamW, StableAdamW or LAMB) and its learning-rate schedule: over
    `optim.schedule_steps` (else the run's `total_steps`), from step `optim.schedule_offset` on.

    With `external_rate` the chain runs at a learning rate of 1 and the caller multiplies its update
    by the schedule at a position of its own (`update.train_step`'s `position`: a time budget's
    elapsed share). Every optimizer here is linear in its learning rate, weight decay included, so
    this is the same update as the schedule inside the chain."""
    schedule = learning_rate_schedule(optim, optim.schedule_steps or total_steps)
    if optim.schedule_offset:
        schedule = _shifted(schedule, optim.schedule_offset)
    returned, schedule = schedule, (optax.constant_schedule(1.0) if external_rate else schedule)
    if optim.optimizer == "adamw":  # optax.adamw's chain, with the Adam direction chosen above
        base = optax.chain(
            _adam_direction(optim),
            optax.add_decayed_weights(optim.weight_decay, mask=_mask(optim)),
            optax.scale_by_learning_rate(schedule),
        )
    elif optim.optimizer == "stable_adamw":
        base = stable_adamw(schedule, optim)
    else:
        base = lamb(schedule, optim)
    parts = [clip_by_global_norm(optim.clip_norm)] if optim.clip_norm > 0 else []
    return optax.chain(*parts, base), returned
