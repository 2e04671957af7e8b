"""The steps of a training loop that pretraining and fine-tuning share.

- `to_global`: a global batch on the mesh from this host's rows (one or many hosts alike).
- `TrainLog`: the metrics of the steps since the last log line, fetched together, averaged, with
  throughput (sequences/s, TFLOP/s per device, MFU) and the non-finite guard's verdict.
- `StopSignal`: SIGTERM / SIGINT noted and agreed over all processes, to stop after a checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bertjax.errors import TrainingStopped
from bertjax.training import logs


def to_global(batch: dict[str, np.ndarray], batch_sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
    """A global batch on the mesh from this host's rows."""
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}


def local_rows(rows: np.ndarray) -> np.ndarray:
    """This process's share of a global batch's rows (the processes' shares in process order)."""
    per_process = len(rows) // jax.process_count()
    start = jax.process_index() * per_process
    return rows[start : start + per_process]


class TrainLog:
    """The train metrics between two log lines.

    `add(metrics, rows, flops)` after each step keeps the step's metrics on the device (no wait);
    `flush(step, manager, progress_bar)` fetches them all at once (waiting for the steps dispatched so far) and returns
    their means with throughput figures. Non-finite updates (the step dropped them) are counted:
    with `nonfinite="stop"` the first one raises `TrainingStopped` naming the step and the latest
    checkpoint; with "skip" a warning lists them. Time spent outside training (evaluation) is
    excluded with `pause()`.
    """

    def __init__(self, nonfinite: str, device_kind: str, dtype: str, skipped_steps: int = 0) -> None:
        self.nonfinite = nonfinite
        self.peak_tflops = logs.DATASHEET_TFLOPS.get((device_kind, dtype))
        self.skipped_steps = skipped_steps
        self._pending: list[dict[str, jax.Array]] = []
        self._rows = 0
        self._flops = 0.0
        self._start = time.perf_counter()
        self._paused_at: float | None = None

    def add(self, metrics: dict[str, jax.Array], rows: int, flops: float) -> None:
        self._pending.append(metrics)
        self._rows += rows
        self._flops += flops

    def pause(self) -> None:
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._start += time.perf_counter() - self._paused_at
            self._paused_at = None

    def flush(self, step: int, manager: Any, progress_bar: Any) -> dict[str, float]:
        fetched = jax.device_get(self._pending)
        seconds = time.perf_counter() - self._start
        summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        summary["seq_per_second"] = self._rows / seconds
        flops_per_row = self._flops / max(self._rows, 1)
        summary |= logs.throughput(flops_per_row, self._rows / seconds, jax.device_count(), self.peak_tflops)
        bad = [step - len(fetched) + 1 + i for i, m in enumerate(fetched) if m["nonfinite"]]
        self.skipped_steps += len(bad)
        summary["skipped_steps"] = float(self.skipped_steps)
        self._pending, self._rows, self._flops, self._start = [], 0, 0.0, time.perf_counter()
        if bad and self.nonfinite == "stop":
            progress_bar.close()  # the error is the last line the user sees
            manager.wait_until_finished()
            latest_checkpoint, checkpoint_dir = manager.latest_step(), Path(str(manager.directory))
            raise TrainingStopped(
                f"non-finite loss or gradient at step {bad[0]} (train.nonfinite=stop); the update was not "
                f"applied and nothing after step {latest_checkpoint or 0} was saved: the latest checkpoint is "
                f"{'step ' + str(latest_checkpoint) if latest_checkpoint else 'none'} in {checkpoint_dir}"
            )
        if bad:
            logging.warning("skipped %d non-finite update(s), at steps %s", len(bad), bad[:10])
        return summary


class StopSignal:
    """SIGTERM / SIGINT (preemption, Ctrl-C) noted, to stop at the next step boundary after a checkpoint.

    With several processes, `agreed()` is true on all of them at the same step once any of them
    received a signal, so they save the same checkpoint together. Each call starts a max of the
    processes' flags on the devices (queued behind the step just dispatched) and answers with
    the previous call's: a signal stops the run one step later, and the host never waits for
    the devices just to ask (a blocking gather per step would leave them idle while the host
    builds and dispatches the next step).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, mesh: jax.sharding.Mesh | None = None) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}
        self._mesh = mesh
        self._in_flight: jax.Array | None = None
        self._any: Any = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        del frame
        self.received = True
        logging.warning("received signal %d: saving a checkpoint at the end of this step, then stopping", signum)

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return self.received
        answer = self._in_flight is not None and bool(np.asarray(self._in_flight.addressable_data(0)))
        self._in_flight = self._any_received()
        return answer

    def _any_received(self) -> jax.Array:
        """Whether any process has received a signal, as a replicated device scalar (not waited for)."""
        mesh = self._mesh or jax.sharding.Mesh(np.asarray(jax.devices()), ("devices",))
        one_per_device = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(tuple(mesh.axis_names)))
        if self._any is None:
            self._any = jax.jit(jnp.max, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        local = np.full(jax.local_device_count(), self.received, np.int32)  # the same on each local device
        flags = jax.make_array_from_process_local_data(one_per_device, local, (jax.device_count(),))
        return self._any(flags)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def print_stopped(step: float, workdir: str | Path) -> None:
    """The last line of a run that SIGTERM/SIGINT stopped (pretraining and fine-tuning alike)."""
    print(
        f"stopped by a signal: checkpoint saved at step {int(step)} in {Path(workdir) / 'checkpoints'}; "
        "run the same command to resume"
    )
