"""The device mesh and the shardings of state and batches, from logical axis names.

Parameters carry logical names (`bertjax.model`); `MeshConfig.logical_axis_rules` map them to the
mesh axes `data`, `fsdp` and `tensor`. This module turns abstract (boxed) state into
`NamedSharding`s, so state is born sharded by a jitted init with `out_shardings`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertjax.config import MeshConfig
from bertjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Sizes of (data, fsdp, tensor); one size of -1 takes the remaining devices."""
    sizes = [config.data, config.fsdp, config.tensor]
    if sizes.count(-1) > 1:
        raise ConfigError("config: at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"config: mesh sizes {sizes} do not divide the {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ConfigError(f"config: mesh sizes {sizes} need {int(np.prod(sizes))} devices, found {num_devices}")
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(config: MeshConfig, devices: list[Any] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(config, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules(config: MeshConfig) -> tuple[tuple[str, Any], ...]:
    return tuple((name, tuple(axis) if isinstance(axis, list) else axis) for name, axis in config.logical_axis_rules)


def _unboxed(x: Any) -> Any:
    """A boxed leaf's value, without the sharding constraint that unboxing applies inside a mesh."""
    return x.unbox(apply_constraint=False) if isinstance(x, nn.Partitioned) else x


def state_shardings(abstract_boxed: Any, mesh: Mesh, config: MeshConfig) -> Any:
    """NamedShardings for a (boxed, abstract) pytree whose leaves carry logical axis names. A
    dimension that its mesh axes do not divide evenly (BERT's 30,522-word vocabulary over a
    tensor axis of 4) is kept whole along them, with a warning, as jax places only even splits."""
    specs = nn.get_partition_spec(abstract_boxed)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules(config))
    shapes = jax.tree.map(_unboxed, abstract_boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    kept_whole: dict[tuple[int, str, int], list[str]] = {}

    def even(path: Any, leaf: Any, leaf_sharding: Any) -> Any:
        if not isinstance(leaf_sharding, NamedSharding):
            return leaf_sharding
        spec = list(leaf_sharding.spec) + [None] * (len(leaf.shape) - len(leaf_sharding.spec))
        for dim, axes in enumerate(spec):
            names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            ways = int(np.prod([mesh.shape[name] for name in names]))
            if leaf.shape[dim] % ways:
                kept_whole.setdefault((leaf.shape[dim], "x".join(names), ways), []).append(jax.tree_util.keystr(path))
                spec[dim] = None
        return NamedSharding(mesh, PartitionSpec(*spec))

    shardings = jax.tree_util.tree_map_with_path(even, shapes, shardings)
    for (size, axes, ways), paths in kept_whole.items():
        logging.warning(
            "%d arrays have a dimension of %d, which mesh axis %s (%d devices) does not divide: they are kept "
            "whole along it (e.g. %s)",
            len(paths),
            size,
            axes,
            ways,
            paths[0],
        )
    return shardings


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches are split along their leading axis over the data and fsdp mesh axes."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def check_batch_splits(mesh: Mesh, rows: int, key: str, microbatches: int = 1) -> None:
    """ConfigError naming config key `key` unless `rows` (in `microbatches`) split evenly over the
    data-parallel devices (the data and fsdp mesh axes)."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % (microbatches * shards):
        split = f" in {microbatches} microbatches" if microbatches > 1 else ""
        raise ConfigError(f"config key {key}={rows} does not split{split} over the {shards} data-parallel devices")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def bytes_per_device(abstract: Any, shardings: Any) -> int:
    """The bytes the most loaded device holds of a pytree of abstract arrays placed by `shardings`."""
    totals: dict[Any, int] = {}
    for leaf, leaf_sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        shard = leaf_sharding.shard_shape(leaf.shape)
        size = int(np.prod(shard, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
        for device in leaf_sharding.device_set:
            totals[device] = totals.get(device, 0) + size
    return max(totals.values())
