"""The train state and how it is made: born sharded on the mesh, then filled from pretrained weights.

Every task's state is the same pytree (`TrainState`); what differs is the model whose parameters it
holds, so state creation takes the model's `init` as a function of a key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.experimental import multihost_utils

from bertjax.config import MeshConfig
from bertjax.parallel import sharding
from bertjax.weights import pretrained
from bertjax.weights.param_tree import (
    STACKED_PREFIX,
    flatten,
    stack_layers,
    stacked_layer_count,
    unflatten,
    unstack_layers,
)


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree."""

    step: jax.Array
    params: Any
    opt_state: Any


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(the key of the fresh parameters, the key of dropout) of a run with `train.seed`."""
    init_rng, dropout_rng = jax.random.split(jax.random.key(seed))
    return init_rng, dropout_rng


def init_state(rng: jax.Array, init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation) -> TrainState:
    """A fresh (boxed) state: parameters still carry their logical axis names."""
    params = init_params(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def abstract_sharded_state(
    rng: jax.Array,
    init_params: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    mesh_config: MeshConfig,
) -> tuple[TrainState, Any]:
    """The state's shapes, dtypes and shardings (`jax.ShapeDtypeStruct`s; nothing is computed) and the
    shardings: the target a checkpoint is restored into."""
    boxed = jax.eval_shape(lambda key: init_state(key, init_params, tx), rng)
    shardings = sharding.state_shardings(boxed, mesh, mesh_config)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.meta.unbox(boxed), shardings
    )
    return abstract, shardings


def fresh_state(
    rng: jax.Array,
    init_params: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    shardings: Any,
    mesh: jax.sharding.Mesh,
    mesh_config: MeshConfig,
) -> TrainState:
    """Every parameter drawn by `init_params(rng)`, born sharded (jitted with `out_shardings`)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
        return jax.jit(lambda key: nn.meta.unbox(init_state(key, init_params, tx)), out_shardings=shardings)(rng)


def create_sharded_state(
    rng: jax.Array,
    init_params: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    mesh_config: MeshConfig,
) -> tuple[TrainState, Any]:
    """State born sharded: eval_shape -> logical specs -> jitted init with out_shardings.

    `init_params(key)` returns the model's (boxed) parameters, e.g.
    `lambda key: model.init({"params": key}, *dummy_inputs)["params"]`. Returns (state, shardings);
    the state's arrays are never materialised whole on one device.
    """
    _, shardings = abstract_sharded_state(rng, init_params, tx, mesh, mesh_config)
    return fresh_state(rng, init_params, tx, shardings, mesh, mesh_config), shardings


def to_host(tree: Any) -> Any:
    """A tree of (possibly sharded over several processes) arrays as numpy arrays on every host."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def init_from_checkpoint(
    rng: jax.Array,
    init_params: Callable[[jax.Array], Any],
    abstract: TrainState,
    checkpoint: pretrained.Pretrained,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    mesh_config: MeshConfig,
    verbose: bool,
) -> tuple[TrainState, pretrained.LoadReport]:
    """A new state with the checkpoint's parameters, a new optimizer state and, for the heads the
    checkpoint lacks, the values `fresh_state` would draw (`init_params(rng)`).

    Only those heads are computed: the jitted init returns nothing else, so XLA drops the rest of
    it (compiling a whole model's initialisers takes seconds). Checkpoints hold one parameter per
    layer; a scanned encoder (`model.scan_layers`) takes them stacked.
    """
    shapes = flatten(abstract.params)
    missing = [p for p in shapes if p not in checkpoint.params and not p.startswith(STACKED_PREFIX)]

    def draw(key: jax.Array) -> dict[str, jax.Array]:
        params = flatten(nn.meta.unbox(init_params(key)))
        return {p: params[p] for p in missing}

    drawn = {}
    if missing:
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
            drawn = to_host(jax.jit(draw, out_shardings={p: shapes[p].sharding for p in missing})(rng))
    # Placeholders (zero-size broadcasts) for everything the checkpoint fills; `merge` checks that it does.
    fresh = {p: np.broadcast_to(np.zeros((), s.dtype), s.shape) for p, s in shapes.items()} | drawn
    merged, report = pretrained.merge(unstack_layers(fresh), checkpoint)
    if layers := stacked_layer_count(fresh):
        merged = stack_layers(merged, layers)
    params_shardings = jax.tree.map(lambda s: s.sharding, abstract.params)
    params = jax.device_put(unflatten(merged), params_shardings)
    if verbose:
        print(f"init from {checkpoint.path}: {report.describe()}")
    opt_shardings = jax.tree.map(lambda s: s.sharding, abstract.opt_state)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    step = jax.device_put(np.zeros((), np.int32), abstract.step.sharding)
    return TrainState(step=step, params=params, opt_state=opt_state), report
