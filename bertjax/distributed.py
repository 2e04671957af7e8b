"""Multi-host start-up: `jax.distributed.initialize` when the config or the environment asks for it.

`mode="auto"` (the default) initialises on a cluster that JAX recognises by itself (a TPU pod
slice, SLURM with several tasks, Open MPI, or JAX_COORDINATOR_ADDRESS set) and does nothing on
one machine; `"explicit"` uses the coordinator address, process count and id of the config (any
other launcher); `"off"` never initialises. With an explicit coordinator the coordinator service
binds to that address only (127.0.0.1:PORT for local multi-process runs), never to all interfaces.
Must run before anything else touches JAX.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from bertjax.config import DistributedConfig
from bertjax.errors import ConfigError


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
