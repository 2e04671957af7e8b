"""What a pretraining or fine-tuning run needs on a topology it is not running on: its train and eval steps
compiled for a TPU slice's description (libtpu's compiler, no TPU needed) or for N CPU devices,
from abstract sharded state; memory per device against the chip's HBM, XLA's cost, collectives,
datasheet step-time bounds, and the smallest change that fits (`bertjax.preflight` prints it)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax import config as config_lib
from bertjax.data.pretraining import predictions_per_row
from bertjax.errors import ConfigError
from bertjax.parallel import hlo, sharding
from bertjax.training import finetuning, pretraining

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
    try:
        return topologies.get_topology_desc(
            platform="tpu",
            topology_name=f"{chip.family}:{'x'.join(map(str, topology.shape))}",
            chip_config_name=chip.chip_config,
            chips_per_host_bounds=bounds,
            num_slices=1,
        ).devices
    except jax.errors.JaxRuntimeError as e:
        if "lockfile" not in str(e):
            raise
        # libtpu serves one process per host: a second preflight waits for the first one.
        raise ConfigError(
            f"--topology={topology.name}: another process holds the TPU compiler (libtpu's /tmp/libtpu_lockfile); "
            "run one preflight at a time"
        ) from None


def compile_steps(config: config_lib.PretrainConfig, devices: list[Any]) -> dict[str, Any]:
    """Compiles the config's train and eval steps on `devices`; the per-device figures. The model's
    shape is the run's where its vocab (and `init`) are on this host; without them, a vocab_size
    of 0 is taken as BERT's 30,522."""
    if Path(config.data.vocab_file).exists() and (not config.init or Path(config.init).exists()):
        config, _, _ = pretraining.setup_model_config(config)
    else:
        model_config = dataclasses.replace(config.model, vocab_size=config.model.vocab_size or 30522)
        config = dataclasses.replace(config, model=model_config)
    mesh = sharding.make_mesh(config.mesh, devices)
    with jax.default_device(jax.devices("cpu")[0]):
        built = pretraining.build(config, mesh, jax.random.key(0))
    abstract, shardings, steps = built.abstract, built.shardings, built.steps
    rows = max(size for _, size in config.train.batch_schedule())
    sharding.check_batch_splits(mesh, rows, "train.batch_size")
    sharding.check_batch_splits(mesh, config.train.eval_rows(), "train.eval_batch_size")
    batch_sharding = sharding.batch_sharding(mesh)
    batch, eval_batch = (
        pretraining.abstract_batch(config, size, batch_sharding) for size in (rows, config.train.eval_rows())
    )
    key, position = _abstract_key(mesh), pretraining.abstract_position(config, mesh)  # outside the mesh context
    common = {
        "devices": len(devices),
        "mesh": dict(mesh.shape),
        "global_batch": rows,
        "eval_batch": config.train.eval_rows(),
        "parameters": sharding.bytes_per_device(abstract.params, shardings.params),
        "optimizer_state": sharding.bytes_per_device(abstract.opt_state, shardings.opt_state),
        "model_flops": pretraining.train_flops(config, predictions_per_row(config.data)) * rows / len(devices),
        "train_steps": config.train.num_train_steps,
    }
    return common | _compiled(
        mesh,
        config.mesh,
        lambda: steps.train.trace(abstract, batch, key, *position),
        lambda: steps.evaluate.lower(abstract.params, eval_batch),
    )


def compile_finetune_steps(
    config: config_lib.FinetuneConfig, run_setup: finetuning.Setup, devices: list[Any]
) -> dict[str, Any]:
    """Compiles a fine-tuning run's train and predict steps on `devices` for batches of its
    longest rows (`task.max_seq_length`: grouped or packed batches are never wider); the
    per-device figures. `run_setup` is the run's own (`finetuning.setup`: its data read and encoded,
    which fix the label set and the steps)."""
    mesh = sharding.make_mesh(config.mesh, devices)
    with jax.default_device(jax.devices("cpu")[0]):
        made = finetuning.parts(config, run_setup, mesh, jax.random.key(0))
    batch_sharding = sharding.batch_sharding(mesh)
    features = run_setup.data.train.features
    rows, eval_rows = config.train.batch_size, config.train.eval_batch_size

    def batch_of(count: int, keys: Any) -> dict[str, jax.ShapeDtypeStruct]:
        # The split's arrays are encoded max_seq_length wide; a batch has `count` of their rows.
        shapes = {k: ((count, *features[k].shape[1:]), features[k].dtype) for k in keys}
        shapes["weights"] = ((count,), jnp.float32)
        return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding) for k, (shape, dtype) in shapes.items()}

    batch = batch_of(rows, features)
    eval_batch = {k: v for k, v in batch_of(eval_rows, run_setup.task.input_keys).items() if k != "weights"}
    key = _abstract_key(mesh)  # outside the mesh context: it draws a key on the default device
    common = {
        "devices": len(devices),
        "mesh": dict(mesh.shape),
        "global_batch": rows,
        "eval_batch": eval_rows,
        "parameters": sharding.bytes_per_device(made.abstract.params, made.shardings.params),
        "optimizer_state": sharding.bytes_per_device(made.abstract.opt_state, made.shardings.opt_state),
        "model_flops": run_setup.model_config.train_flops(config.task.max_seq_length) * rows / len(devices),
        "train_steps": made.total_steps,
    }
    return common | _compiled(
        mesh,
        config.mesh,
        lambda: made.train_step.trace(made.abstract, batch, key),
        lambda: made.predict_fn.lower(made.abstract.params, eval_batch),
    )


def _abstract_key(mesh: jax.sharding.Mesh) -> jax.ShapeDtypeStruct:
    """The train step's dropout key, replicated."""
    return jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding.replicated(mesh))


def _compiled(mesh: jax.sharding.Mesh, mesh_config: Any, trace_train: Any, lower_eval: Any) -> dict[str, Any]:
    """Compiles the lowered train and eval steps; their memory, cost and collectives per device,
    or the TPU compiler's refusal for want of HBM."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
        try:
            traced = trace_train()
            lowered = traced.lower()
            train = lowered.compile()
            evaluate = lower_eval().compile()
        except jax.errors.JaxRuntimeError as e:
            refused = out_of_memory(str(e))
            if refused is None:
                raise
            return refused
    memory = train.memory_analysis()
    cost = train.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    collectives: dict[str, int] = {}
    for collective in hlo.hlo_collectives(train.as_text()):
        collectives[collective.kind] = collectives.get(collective.kind, 0) + collective.bytes
    eval_memory = evaluate.memory_analysis()
    peak = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
    peak += memory.temp_size_in_bytes
    return {
        "arguments": memory.argument_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "total": peak,
        "eval_total": eval_memory.argument_size_in_bytes
        + eval_memory.output_size_in_bytes
        + eval_memory.temp_size_in_bytes,
        "flops": float(cost.get("flops", 0.0)),
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "collectives": collectives,
        "executable": (train, traced, lowered),
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


def check(
    config: config_lib.PretrainConfig | config_lib.FinetuneConfig,
    topology: Topology,
    devices: list[Any],
    hbm_gib: float,
    run_setup: finetuning.Setup | None = None,
) -> dict[str, Any]:
    """A pretraining config's steps, or a fine-tuning config's (with its `run_setup`), compiled on
    `devices` and checked against `hbm_gib` per device, with the datasheet estimate."""
    if isinstance(config, config_lib.FinetuneConfig):
        report = compile_finetune_steps(config, run_setup, devices)
    else:
        report = compile_steps(config, devices)
    report["hbm"] = hbm_gib * GIB
    report["fits"] = report["total"] <= report["hbm"] and report["eval_total"] <= report["hbm"]
    report["estimate"] = estimate(report, topology.chip, report["train_steps"])
    return report


def print_report(report: dict[str, Any], topology: Topology, config_arg: str) -> None:
    def gib(x: float) -> str:
        return f"{x / GIB:.2f} GiB" if abs(x) >= GIB else f"{x / 2**20:.1f} MiB"

    mesh = " x ".join(f"{axis} {size}" for axis, size in report["mesh"].items())
    print(
        f"{config_arg} on {topology.name} ({report['devices']} devices; mesh {mesh}; global batch {report['global_batch']}"
        + (f", eval batch {report['eval_batch']})" if report["eval_batch"] != report["global_batch"] else ")")
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
            f"{_duration(est['train_hours'])} for the configured steps (an estimate from datasheet rates)"
        )


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


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


def suggest(
    base: Any, topology: Topology, devices: list[Any], hbm_gib: float, run_setup: finetuning.Setup | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The first of SUGGESTIONS under which the run fits, or None. With N microbatches the held-out
    batches shrink to the microbatch (train.eval_batch_size) unless they are smaller already: the
    eval step runs its whole batch at once. `run_setup`: a fine-tuning run's (see `check`)."""
    parse = config_lib.finetune_config_from_dict if run_setup is not None else config_lib.from_config_dict
    as_given = parse(base)
    tried = [as_given]
    for name, overrides in SUGGESTIONS:
        microbatches = overrides.get("optim.grad_accum_steps", 1)
        eval_rows = min(as_given.train.eval_rows(), as_given.train.batch_size // microbatches)
        if eval_rows != as_given.train.eval_rows():
            overrides = {**overrides, "train.eval_batch_size": eval_rows}
        try:
            config = parse(config_lib.apply_overrides(base, overrides))
            if config in tried:  # no change here (e.g. FSDP where the mesh already is)
                continue
            tried.append(config)
            report = check(config, topology, devices, hbm_gib, run_setup)
        except ConfigError:
            continue  # e.g. a batch that does not split into that many microbatches over the devices
        evaluated = "not compiled" if "compiler" in report else f"{report['eval_total'] / GIB:.2f} GiB"
        print(
            f"  try {name}: train step {report['total'] / GIB:.2f} GiB, eval step {evaluated}: "
            f"{'fits' if report['fits'] else 'does not fit'}"
        )
        if report["fits"]:
            return name, overrides
    return None


def host_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
