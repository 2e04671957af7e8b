"""Multi-host start-up: `jax.distributed.initialize` when the config or the environment asks for it.

`mode="auto"` (the default) initialises on a cluster that JAX recognises by itself (a TPU pod
slice, SLURM with several tasks, Open MPI, or JAX_COORDINATOR_ADDRESS set) and does nothing on
one machine; `"explicit"` uses the coordinator address, process count and id of the config (any
other launcher); `"off"` never initialises. With an explicit coordinator the coordinator service
binds to that address only (127.0.0.1:PORT for local multi-process runs), never to all interfaces.
Must run before anything else touches JAX. `first_on_process_0` runs shareable start-up work
(the corpus preparation) on process 0 before the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import jax
from absl import logging

from bertjax import errors
from bertjax.config import DistributedConfig
from bertjax.errors import ConfigError

T = TypeVar("T")

# How long the other processes wait for process 0's `first_on_process_0` work (corpus preparation
# can take hours on a large corpus); a process that dies is noticed sooner by the coordinator.
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


def first_on_process_0(name: str, work: Callable[[], T]) -> T:
    """`work()` on process 0 first, then on the other processes once it has finished there.

    For work whose result the others can reuse: the prepared corpus, in a cache directory that
    the hosts share, is then found by the others instead of being built N times over (on hosts
    that do not share it, each builds its own copy, as before). A `BertjaxError` or
    `TrainingStopped` on process 0 is raised on every process with the same message, so all hosts
    end with the same one-line error instead of waiting. One process: just `work()`.

    The signal goes through the key-value store of the jax.distributed coordinator (the client
    orbax also uses), with a wait of `WAIT_SECONDS`; `name` must be unique within the run.
    """
    if jax.process_count() == 1:
        return work()
    from jax._src import distributed as jax_distributed  # the coordinator's client (no public API)

    client = jax_distributed.global_state.client
    key = f"bertjax/{name}"
    if jax.process_index() == 0:
        try:
            result = work()
        except (errors.BertjaxError, errors.TrainingStopped) as e:
            client.key_value_set(key, f"{type(e).__name__}:{e}")
            raise
        except BaseException as e:
            client.key_value_set(key, f"RuntimeError:process 0 failed in {name}: {type(e).__name__}: {e}")
            raise
        client.key_value_set(key, "done")
        return result
    status = client.blocking_key_value_get(key, WAIT_SECONDS * 1000)
    if status != "done":
        kind, _, message = status.partition(":")
        error = getattr(errors, kind, RuntimeError)
        raise error(message)
    return work()
