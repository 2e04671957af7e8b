"""What a pretraining run needs on a topology it is not running on: its train and eval steps
compiled for a TPU slice's description (libtpu's compiler, no TPU needed) or for N CPU devices,
from abstract sharded state; memory per device against the chip's HBM, XLA's cost, collectives,
datasheet step-time bounds, and the smallest change that fits (`bertjax.preflight` prints it)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax import config as config_lib
from bertjax.data.pretraining import predictions_per_row
from bertjax.errors import ConfigError
from bertjax.parallel import hlo, sharding
from bertjax.training import pretraining

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """A TPU generation's datasheet figures (per chip) and how its topology names count devices."""

    family: str  # jax's topology prefix
    hbm_gib: float
    bf16_tflops: float
    hbm_gb_per_s: float
    cores_per_chip: int  # what the slice name counts per chip (v4/v5p: TensorCores)
    dims: int  # torus dimensions
    chip_config: str  # libtpu's chip configuration ("megacore": one device per chip)


# Google's published per-chip figures: HBM capacity and bandwidth, peak bf16 TFLOP/s.
CHIPS = {
    "v4": Chip("v4", 32, 275, 1228, 2, 3, "megacore"),
    "v5p": Chip("v5p", 95, 459, 2765, 2, 3, "megacore"),
    "v5e": Chip("v5e", 16, 197, 819, 1, 2, "default"),
    "v6e": Chip("v6e", 32, 918, 1640, 1, 2, "default"),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    chip: Chip | None  # None: simulated CPU devices
    devices: int
    shape: tuple[int, ...] = ()


def parse_topology(name: str) -> Topology:
    """`v5p-256` (256 TensorCores: 128 chips, 4x4x8), `v5e-16` (16 chips, 4x4), `cpu-8`; ConfigError otherwise."""
    match = re.fullmatch(r"(v4|v5p|v5e|v6e|cpu)-(\d+)", name)
    if not match:
        raise ConfigError(f"--topology={name}: expected v4-N, v5p-N, v5e-N, v6e-N or cpu-N")
    family, count = match.group(1), int(match.group(2))
    if family == "cpu":
        if count < 1:
            raise ConfigError(f"--topology={name}: at least one device")
        return Topology(name, None, count)
    chip = CHIPS[family]
    chips = count // chip.cores_per_chip
    if count % chip.cores_per_chip or chips < 1 or chips & (chips - 1):
        raise ConfigError(f"--topology={name}: {family} slices have a power of two of chips")
    # One host's chips first (2x2x1, or 2x2), then the last of the smallest dimensions doubles:
    # 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, ... (8x8, 8x16, 16x16 in two dimensions).
    shape = [1] * chip.dims
    for axis in range(2):
        if math.prod(shape) < chips:
            shape[axis] = 2
    while math.prod(shape) < chips:
        smallest = min(shape)
        shape[max(i for i, d in enumerate(shape) if d == smallest)] *= 2
    return Topology(name, chip, chips, tuple(shape))


def topology_devices(topology: Topology) -> list[Any]:
    """The devices to compile for: a TPU topology's description, or this host's CPU devices."""
    if topology.chip is None:
        devices = jax.devices("cpu")
        if len(devices) != topology.devices:
            raise ConfigError(f"--topology={topology.name}: this process has {len(devices)} CPU devices")
        return devices
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        raise ConfigError(
            f"--topology={topology.name} needs the TPU compiler: pip install -e '.[tpu]' (libtpu, the version jax pins)"
        )
    from jax.experimental import topologies

    chip = topology.chip
    bounds = (2, 2, 1) if topology.devices >= 4 else (1, 1, 1)
    return topologies.get_topology_desc(
        platform="tpu",
        topology_name=f"{chip.family}:{'x'.join(map(str, topology.shape))}",
        chip_config_name=chip.chip_config,
        chips_per_host_bounds=bounds,
        num_slices=1,
    ).devices


def _batch_shapes(config: config_lib.PretrainConfig, rows: int) -> dict[str, tuple[tuple[int, ...], str]]:
    length, predictions = config.data.max_seq_length, predictions_per_row(config.data)
    shapes = {
        "input_ids": ((rows, length), "int32"),
        "token_type_ids": ((rows, length), "int32"),
        "attention_mask": ((rows, length), "int32"),
        "masked_lm_positions": ((rows, predictions), "int32"),
        "masked_lm_ids": ((rows, predictions), "int32"),
        "masked_lm_weights": ((rows, predictions), "float32"),
        "next_sentence_labels": ((rows,), "int32"),
    }
    if config.data.pack_examples > 1:
        slots = (rows, config.data.pack_examples)
        shapes["next_sentence_labels"] = (slots, "int32")
        shapes["next_sentence_positions"] = (slots, "int32")
        shapes["next_sentence_weights"] = (slots, "float32")
    return shapes


def compile_steps(config: config_lib.PretrainConfig, devices: list[Any]) -> dict[str, Any]:
    """Compiles the config's train and eval steps on `devices`; the per-device figures."""

    model_config = dataclasses.replace(config.model, vocab_size=config.model.vocab_size or 30522)
    config = dataclasses.replace(config, model=model_config)
    mesh = sharding.make_mesh(config.mesh, devices)
    with jax.default_device(jax.devices("cpu")[0]):
        built = pretraining.build(config, mesh, jax.random.key(0))
    abstract, shardings, steps = built.abstract, built.shardings, built.steps
    on_budget = config.train.time_budget_hours > 0
    rows = max(size for _, size in config.train.batch_schedule())
    batch_sharding = sharding.batch_sharding(mesh)
    batch = {
        k: jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=batch_sharding)
        for k, (shape, dtype) in _batch_shapes(config, rows).items()
    }
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding.replicated(mesh))
    position = (jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding.replicated(mesh)),) if on_budget else ()
    common = {
        "devices": len(devices),
        "mesh": dict(mesh.shape),
        "global_batch": rows,
        "parameters": sharding.bytes_per_device(abstract.params, shardings.params),
        "optimizer_state": sharding.bytes_per_device(abstract.opt_state, shardings.opt_state),
        "model_flops": pretraining.train_flops(config, predictions_per_row(config.data)) * rows / len(devices),
    }
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
        try:
            train = steps.train.lower(abstract, batch, key, *position).compile()
            evaluate = steps.evaluate.lower(abstract.params, batch).compile()
        except jax.errors.JaxRuntimeError as e:
            refused = out_of_memory(str(e))
            if refused is None:
                raise
            return common | refused
    memory = train.memory_analysis()
    cost = train.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    collectives: dict[str, int] = {}
    for collective in hlo.hlo_collectives(train.as_text()):
        collectives[collective.kind] = collectives.get(collective.kind, 0) + collective.bytes
    eval_memory = evaluate.memory_analysis()
    peak = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
    peak += memory.temp_size_in_bytes
    return common | {
        "arguments": memory.argument_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "total": peak,
        "eval_total": eval_memory.argument_size_in_bytes
        + eval_memory.output_size_in_bytes
        + eval_memory.temp_size_in_bytes,
        "flops": float(cost.get("flops", 0.0)),
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "collectives": collectives,
        "executable": train,
    }


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_REFUSED = re.compile(
    r"memory required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)"
)


def out_of_memory(message: str) -> dict[str, Any] | None:
    """The figures of a compile the TPU compiler refused for want of HBM (RESOURCE_EXHAUSTED: "the
    total memory required for HLO temporaries (169.33G) exceeds available HBM (15.75G)"), or None
    for any other error."""
    match = _REFUSED.search(message)
    if "RESOURCE_EXHAUSTED" not in message or match is None:
        return None
    needed = float(match.group(1)) * _UNITS[match.group(2)]
    return {
        "arguments": 0,
        "temporaries": needed,
        "total": needed,
        "eval_total": 0,
        "flops": 0.0,
        "bytes_accessed": 0.0,
        "collectives": {},
        "executable": None,
        "compiler": match.group(0),
    }


def estimate(report: dict[str, Any], chip: Chip | None, steps: int) -> dict[str, float]:
    """Step-time bounds from the chip's datasheet: FLOPs at peak (the model's count, or XLA's where
    larger: XLA counts a scanned layer's body once, so under `scan_layers` its FLOPs and bytes are
    one layer's and the bounds are looser), bytes at HBM bandwidth. Both are lower bounds, so the
    MFU they allow is an upper bound."""
    if chip is None:
        return {}
    compute = max(report["flops"], report["model_flops"]) / (chip.bf16_tflops * 1e12)
    memory = report["bytes_accessed"] / (chip.hbm_gb_per_s * 1e9)
    step = max(compute, memory)
    return {
        "compute_bound_s": compute,
        "hbm_bound_s": memory,
        "step_s": step,
        "mfu_bound": report["model_flops"] / (chip.bf16_tflops * 1e12) / step if step else 0.0,
        "train_hours": step * steps / 3600,
    }


def check(config: config_lib.PretrainConfig, topology: Topology, devices: list[Any], hbm_gib: float) -> dict[str, Any]:
    report = compile_steps(config, devices)
    report["hbm"] = hbm_gib * GIB
    report["fits"] = report["total"] <= report["hbm"] and report["eval_total"] <= report["hbm"]
    report["estimate"] = estimate(report, topology.chip, config.train.num_train_steps)
    return report


def print_report(report: dict[str, Any], topology: Topology, config_arg: str) -> None:
    def gib(x: float) -> str:
        return f"{x / GIB:.2f} GiB" if abs(x) >= GIB else f"{x / 2**20:.1f} MiB"

    mesh = " x ".join(f"{axis} {size}" for axis, size in report["mesh"].items())
    print(
        f"{config_arg} on {topology.name} ({report['devices']} devices; mesh {mesh}; global batch {report['global_batch']})"
    )
    print(f"  per device: parameters {gib(report['parameters'])}, optimizer state {gib(report['optimizer_state'])}, ")
    print(
        f"  temporaries (activations) {gib(report['temporaries'])}; train step total {gib(report['total'])}, eval {gib(report['eval_total'])}"
    )
    if "compiler" in report:
        print(f"  the TPU compiler refused the step: {report['compiler']}")
    margin = report["hbm"] - max(report["total"], report["eval_total"])
    verdict = "FITS" if report["fits"] else "DOES NOT FIT"
    print(f"  {verdict} in {gib(report['hbm'])} per device (margin {gib(margin)})")
    print(
        f"  XLA cost per device and step: {report['flops'] / 1e9:.1f} GFLOP, {gib(report['bytes_accessed'])} accessed"
    )
    if report["collectives"]:
        moved = ", ".join(f"{kind} {value / 2**20:.1f} MiB" for kind, value in sorted(report["collectives"].items()))
        print(f"  collectives per device and step: {moved}")
    est = report["estimate"]
    if est:
        print(
            f"  estimated step time >= {est['step_s'] * 1e3:.1f} ms (compute-bound {est['compute_bound_s'] * 1e3:.1f} ms, "
            f"HBM-bound {est['hbm_bound_s'] * 1e3:.1f} ms; collectives not counted): MFU at most {est['mfu_bound']:.0%}, "
            f"{est['train_hours']:.1f} h for the configured steps (an estimate from datasheet rates)"
        )


# The changes --suggest tries, smallest first: (what, config overrides).
SUGGESTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("remat dots", {"model.remat": "dots"}),
    ("remat full", {"model.remat": "full"}),
    ("fsdp", {"mesh.preset": "fsdp"}),
    ("fsdp + remat full", {"mesh.preset": "fsdp", "model.remat": "full"}),
    *(
        (
            f"fsdp + remat full + {n} microbatches",
            {"mesh.preset": "fsdp", "model.remat": "full", "optim.grad_accum_steps": n},
        )
        for n in (2, 4, 8, 16, 32, 64)
    ),
)


def suggest(base: Any, topology: Topology, devices: list[Any], hbm_gib: float) -> tuple[str, dict[str, Any]] | None:
    """The first of SUGGESTIONS under which the run fits, or None."""
    as_given = config_lib.from_config_dict(base)
    tried = [as_given]
    for name, overrides in SUGGESTIONS:
        try:
            config = config_lib.from_config_dict(config_lib.apply_overrides(base, overrides))
        except ConfigError:
            continue  # e.g. a batch that does not split into that many microbatches
        if config in tried:  # no change here (e.g. FSDP where the mesh already is)
            continue
        tried.append(config)
        report = check(config, topology, devices, hbm_gib)
        print(
            f"  try {name}: train step {report['total'] / GIB:.2f} GiB, eval step {report['eval_total'] / GIB:.2f} GiB: "
            f"{'fits' if report['fits'] else 'does not fit'}"
        )
        if report["fits"]:
            return name, overrides
    return None


def host_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
