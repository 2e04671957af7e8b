"""Multi-host start-up: `jax.distributed.initialize` when the config or the environment asks for it.

`mode="auto"` (the default) initialises on a cluster that JAX recognises by itself (a TPU pod
slice, SLURM with several tasks, Open MPI, or JAX_COORDINATOR_ADDRESS set) and does nothing on
one machine; `"explicit"` uses the coordinator address, process count and id of the config (any
other launcher); `"off"` never initialises. With an explicit coordinator the coordinator service
binds to that address only (127.0.0.1:PORT for local multi-process runs), never to all interfaces.
Must run before anything else touches JAX. `once_per_file_system` does start-up work whose result
the hosts can share (the corpus preparation) once per file system.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
from absl import logging

from bertjax import errors, fileio
from bertjax.config import DistributedConfig
from bertjax.errors import ConfigError

T = TypeVar("T")

# How long a process waits for process 0's `once_per_file_system` work (corpus preparation can
# take hours on a large corpus); a process that dies is noticed sooner by the coordinator.
WAIT_SECONDS = 48 * 3600


def cluster_detected(environ: dict[str, str] | None = None) -> bool:
    """True when this process is one of several that JAX's cluster detection would find."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and "SLURM_JOB_ID" in env:
        return True
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    hostnames = env.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hostnames.split(",") if h]) > 1


def initialize(config: DistributedConfig) -> None:
    """Joins this process to the others of the run (or does nothing on a single host)."""
    if config.mode == "off":
        return
    if config.mode == "explicit":
        if not config.coordinator_address or config.num_processes < 1 or config.process_id < 0:
            raise ConfigError(
                "config: distributed.mode=explicit needs distributed.coordinator_address, "
                "distributed.num_processes and distributed.process_id"
            )
        if config.process_id >= config.num_processes:
            raise ConfigError(
                f"config key distributed.process_id={config.process_id} is not below "
                f"distributed.num_processes={config.num_processes}"
            )
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            coordinator_bind_address=config.coordinator_address,
            initialization_timeout=config.timeout_seconds,
        )
    elif cluster_detected():
        jax.distributed.initialize(initialization_timeout=config.timeout_seconds)
    else:
        return
    logging.info(
        "process %d of %d, %d local devices", jax.process_index(), jax.process_count(), jax.local_device_count()
    )


def once_per_file_system(name: str, directory: Path, work: Callable[[], T]) -> T:
    """`work()` on every process, built once per file system that holds `directory`.

    `work` must write its result under `directory` and reuse a result it finds there (as
    `pretraining.prepare` does with its cache). First, process 0 puts a probe file in `directory`
    and every process looks for it (then all meet at a barrier, and the probe goes). A process
    that saw it shares process 0's file system: it waits for process 0's work and then finds the
    result instead of building it again. A process that did not (a host's own disk) starts at
    once, so hosts with local disks still build in parallel. A `BertjaxError` or
    `TrainingStopped` on process 0 is raised with the same message on the processes waiting for
    it. One process: just `work()`.

    The signals go through the jax.distributed coordinator's key-value store and barrier (the
    client orbax also uses); `name` must be unique within the run. A process that dies is noticed
    by the coordinator; otherwise a wait lasts at most `WAIT_SECONDS`.
    """
    if jax.process_count() == 1:
        return work()
    from jax._src import distributed as jax_distributed  # the coordinator's client (no public API)

    client = jax_distributed.global_state.client
    key, wait_ms = f"bertjax/{name}", WAIT_SECONDS * 1000
    if jax.process_index() != 0:
        shared = (directory / client.blocking_key_value_get(f"{key}/probe", wait_ms)).exists()
        client.wait_at_barrier(f"{key}/looked", wait_ms)
        if shared:  # process 0 is building the result where this process will find it
            logging.info("%s: waiting for process 0, which shares %s", name, directory)
            status = client.blocking_key_value_get(f"{key}/done", wait_ms)
            if status != "done":
                kind, _, message = status.partition(":")
                raise getattr(errors, kind, RuntimeError)(message)
        return work()

    probe = directory / f".bertjax-probe-{uuid.uuid4().hex}"
    with fileio.folders_removed_on_failure(directory):  # a failed start leaves no empty folders behind
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe.touch()
        except OSError:
            pass  # no probe: the others build their own, and `work` reports the directory's problem
        client.key_value_set(f"{key}/probe", probe.name)
        client.wait_at_barrier(f"{key}/looked", wait_ms)
        probe.unlink(missing_ok=True)
        try:
            result = work()
        except (errors.BertjaxError, errors.TrainingStopped) as e:
            client.key_value_set(f"{key}/done", f"{type(e).__name__}:{e}")
            raise
        except BaseException as e:
            client.key_value_set(f"{key}/done", f"RuntimeError:process 0 failed in {name}: {type(e).__name__}: {e}")
            raise
    client.key_value_set(f"{key}/done", "done")
    return result
