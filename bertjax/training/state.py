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
import optax
from flax import struct
from jax.experimental import multihost_utils

from bertjax.config import MeshConfig
from bertjax.parallel import sharding
from bertjax.weights import pretrained
from bertjax.weights.param_tree import flatten, stack_layers, stacked_layer_count, unflatten, unstack_layers


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree."""

    step: jax.Array
    params: Any
    opt_state: Any


def init_state(rng: jax.Array, init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation) -> TrainState:
    """A fresh (boxed) state: parameters still carry their logical axis names."""
    params = init_params(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


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

    def init(key: jax.Array) -> TrainState:
        return init_state(key, init_params, tx)

    shardings = sharding.state_shardings(jax.eval_shape(init, rng), mesh, mesh_config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
        state = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(rng)
    return state, shardings


def to_host(tree: Any) -> Any:
    """A tree of (possibly sharded over several processes) arrays as numpy arrays on every host."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def init_from_checkpoint(
    state: TrainState,
    checkpoint: pretrained.Pretrained,
    tx: optax.GradientTransformation,
    shardings: Any,
    verbose: bool,
) -> tuple[TrainState, pretrained.LoadReport]:
    """The state with the checkpoint's parameters (heads it lacks stay fresh) and a new optimizer state.

    Checkpoints hold one parameter per layer; a scanned encoder (`model.scan_layers`) takes them stacked.
    """
    fresh = flatten(to_host(state.params))
    merged, report = pretrained.merge(unstack_layers(fresh), checkpoint)
    if layers := stacked_layer_count(fresh):
        merged = stack_layers(merged, layers)
    params = jax.device_put(unflatten(merged), shardings.params)
    if verbose:
        print(f"init from {checkpoint.path}: {report.describe()}")
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return TrainState(step=state.step, params=params, opt_state=opt_state), report
