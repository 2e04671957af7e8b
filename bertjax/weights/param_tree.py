"""Parameter trees as flat `{'a/b/c': array}` maps, and the scanned encoder's stacked layers.

Checkpoints and Hugging Face files hold one parameter per layer (`bert/layer_<i>/...`); a scanned
encoder (`model.scan_layers`) holds each parameter stacked along a leading layer axis
(`bert/layers/...`). These helpers convert between the forms. A scanned encoder may keep its first
layers apart (`ModelConfig.first_layer_apart`): the stack then holds the last layers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util


def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
    """A nested parameter tree as {'a/b/c': array}."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(params)).items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


STACKED_PREFIX = "bert/layers/"  # the flat names of a scanned encoder's stacked parameters


def stacked_layer_count(flat: Mapping[str, Any]) -> int:
    """How many layers flat parameters hold stacked (`model.scan_layers`); 0 for one per layer."""
    return next((int(np.shape(v)[0]) for k, v in flat.items() if k.startswith(STACKED_PREFIX)), 0)


def _layer_index(name: str) -> int | None:
    """i of `bert/layer_<i>/...`, else None."""
    part = name.split("/")[1] if name.startswith("bert/layer_") else ""
    return int(part.removeprefix("layer_")) if part.removeprefix("layer_").isdigit() else None


def stack_layers(flat: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Flat parameters (`hf_weights.flatten`) with the last `num_layers` layers `bert/layer_<i>/...`
    as one array per parameter stacked along a leading layer axis, `bert/layers/...` (the
    `model.scan_layers` form); any layers before them stay as they are."""
    total = len({i for k in flat if (i := _layer_index(k)) is not None})
    first = total - num_layers
    out = {k: v for k, v in flat.items() if (i := _layer_index(k)) is None or i < first}
    names = {k.split("/", 2)[2] for k in flat if k.startswith(f"bert/layer_{first}/")}
    for name in names:
        layers = [np.asarray(flat[f"bert/layer_{i}/{name}"]) for i in range(first, total)]
        out[STACKED_PREFIX + name] = np.stack(layers)
    return out


def unstack_layers(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `stack_layers` (flat parameters without `bert/layers/` are returned as they are):
    checkpoints and Hugging Face files always hold one parameter per layer."""
    out = {k: v for k, v in flat.items() if not k.startswith(STACKED_PREFIX)}
    first = len({i for k in out if (i := _layer_index(k)) is not None})  # layers kept apart
    for key, stacked in flat.items():
        if key.startswith(STACKED_PREFIX):
            for i in range(stacked.shape[0]):
                out[f"bert/layer_{first + i}/{key.removeprefix(STACKED_PREFIX)}"] = stacked[i]
    return out
