"""Parameter trees as flat `{'a/b/c': array}` maps, and the scanned encoder's stacked layers.

Checkpoints and Hugging Face files hold one parameter per layer (`bert/layer_<i>/...`); a scanned
encoder (`model.scan_layers`) holds each parameter stacked along a leading layer axis
(`bert/layers/...`). These helpers convert between the forms.
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


def stack_layers(flat: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Flat parameters (`hf_weights.flatten`) with layers `bert/layer_<i>/...` as one array per
    parameter stacked along a leading layer axis, `bert/layers/...` (the `model.scan_layers` form)."""
    out = {k: v for k, v in flat.items() if not k.startswith("bert/layer_")}
    names = {k.split("/", 2)[2] for k in flat if k.startswith("bert/layer_0/")}
    for name in names:
        out[STACKED_PREFIX + name] = np.stack([np.asarray(flat[f"bert/layer_{i}/{name}"]) for i in range(num_layers)])
    return out


def unstack_layers(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `stack_layers` (flat parameters without `bert/layers/` are returned as they are):
    checkpoints and Hugging Face files always hold one parameter per layer."""
    out = {k: v for k, v in flat.items() if not k.startswith(STACKED_PREFIX)}
    for key, stacked in flat.items():
        if key.startswith(STACKED_PREFIX):
            for i in range(stacked.shape[0]):
                out[f"bert/layer_{i}/{key.removeprefix(STACKED_PREFIX)}"] = stacked[i]
    return out
