"""Check a run before launching it: compile its steps for the target topology here.

    python -m bertjax.preflight --config=experiments/recipes.py:recipe=bert,size=large --topology=v5p-256
    python -m bertjax.preflight --config=configs/modernbert.py --topology=v6e-64 --suggest
    python -m bertjax.preflight --config=configs/pretrain.py:size=base --topology=cpu-8 --config.mesh.preset=fsdp
    python -m bertjax.preflight --config=configs/squad.py --config.init=CKPT --topology=v5e-8

A TPU topology (`v4-N`, `v5p-N`: N TensorCores, two per chip; `v5e-N`, `v6e-N`: N chips) is built
from its description with the TPU compiler of the `libtpu` wheel (`pip install -e '.[tpu]'`), so
no TPU is needed; `cpu-N` is N simulated CPU devices. The train and eval steps are lowered and
compiled from abstract sharded state (`jax.ShapeDtypeStruct`s: nothing is materialised), for the
config's global batch (its largest, with a batch-size warmup) and mesh; a fine-tuning config's data
are read and encoded as its run would (its labels and steps), and its steps compiled for batches
`task.max_seq_length` wide. Printed per device: the
parameters', optimizer state's and the compiler's temporary (activation) memory and the total
against the chip's HBM, FITS or DOES NOT FIT with the margin (exit 1 when it does not fit); XLA's
FLOPs and bytes; the collectives by kind; a step-time estimate from the chip's datasheet rates
(the larger of the compute-bound and the HBM-bound times: a lower bound, collectives not
counted), the MFU that bound allows and the time to train. `--suggest` compiles the smallest
changes among remat, FSDP and gradient accumulation until one fits; `--save_executable=FILE`
writes the compiled pretraining train step, which a launch runs with `train.compiled_step_file`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax import config as config_lib
from bertjax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining or fine-tuning config file.", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "v4-N, v5p-N, v5e-N, v6e-N (TPU) or cpu-N (simulated CPU devices).")
_SUGGEST = flags.DEFINE_boolean("suggest", False, "If it does not fit: find the smallest change that does.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "Memory per device to check against (0: the chip's HBM).")
_JSON = flags.DEFINE_string("json", "", "Also write the report as JSON to this file.")
_SAVE = flags.DEFINE_string("save_executable", "", "Write the serialised compiled train step to this file.")
flags.mark_flags_as_required(["config", "topology"])


def main(argv: list[str]) -> None:
    del argv
    import jax

    from bertjax.training import preflight  # after _simulated_cpu_devices: it imports jax

    # One compile per check, for a topology this host does not run: nothing to keep in a
    # persistent cache, whose CPU client cannot load a TPU executable anyway.
    jax.config.update("jax_enable_compilation_cache", False)

    base = cli.config_value(_CONFIG)
    if _SAVE.value and Path(_SAVE.value).exists():
        raise ConfigError(f"--save_executable={_SAVE.value}: the file exists (choose a new name)")
    if _SAVE.value and "task" in base:
        raise ConfigError(
            "--save_executable: fine-tuning batches change width from batch to batch; pretraining runs reuse a step"
        )
    run_setup = None
    if "task" in base:  # fine-tuning: its data read and encoded as the run would (label set, steps)
        from bertjax.training import finetuning

        config = config_lib.finetune_config_from_dict(base)
        run_setup = finetuning.setup(config)
    else:
        config = config_lib.from_config_dict(base)
    topology = preflight.parse_topology(_TOPOLOGY.value)
    devices = preflight.topology_devices(topology)
    hbm_gib = _HBM_GIB.value or (
        topology.chip.hbm_gib if topology.chip else preflight.host_memory_gib() / topology.devices
    )
    config_arg = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")), "config")
    report = preflight.check(config, topology, devices, hbm_gib, run_setup)
    preflight.print_report(report, topology, config_arg)
    if _SAVE.value and report["executable"] is not None:
        from bertjax.training import executables

        executables.save(*report["executable"], _SAVE.value)
        print(f"  compiled train step written to {_SAVE.value} (run it with --config.train.compiled_step_file)")
    if _JSON.value:
        saved = {k: v for k, v in report.items() if k != "executable"}
        Path(_JSON.value).write_text(json.dumps({"topology": topology.name, "config": config_arg, **saved}, indent=2))
    if report["fits"]:
        return
    if _SUGGEST.value:
        found = preflight.suggest(base, topology, devices, hbm_gib, run_setup)
        if found:
            name, overrides = found
            print(f"  fits with {name}: " + " ".join(f"--config.{k}={v}" for k, v in overrides.items()))
        else:
            print("  none of remat, FSDP and up to 64 microbatches makes it fit: a larger topology, or a smaller batch")
    print(
        f"error: does not fit: the train step needs {report['total'] / preflight.GIB:.2f} GiB per device, "
        f"{hbm_gib:.2f} GiB available on {topology.name}",
        file=sys.stderr,
    )
    sys.exit(cli.EXIT_STOPPED)


def _simulated_cpu_devices(argv: list[str]) -> None:
    """--topology=cpu-N: N host devices, set before jax is imported; a TPU topology compiles on the host."""
    for arg in argv:
        match = re.fullmatch(r"--topology=cpu-(\d+)", arg)
        if match:
            os.environ["XLA_FLAGS"] = (
                f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={match.group(1)}"
            )
        if arg.startswith("--topology=v"):
            os.environ.setdefault("JAX_PLATFORMS", "cpu")


def run() -> None:
    """The console script's entry point (`pip install` puts it on the PATH)."""
    _simulated_cpu_devices(sys.argv[1:])
    os.environ.setdefault("BERTJAX_COMPILATION_CACHE", "0")  # see main
    cli.run(main)


if __name__ == "__main__":
    run()
