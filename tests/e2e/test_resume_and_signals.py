"""Preemption and failure: SIGKILL at a random step then the same command gives bitwise-equal
parameters; SIGTERM saves and exits 0; a non-finite loss stops (or is skipped) as configured."""

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pretrain_runs import committed_checkpoints, pretrain_command, run_until, steps_logged, train_records

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _command(workdir, sample_files, cache, *overrides):
    return pretrain_command(workdir, sample_files, cache, "--config.train.eval_every_steps=1000", *overrides)


def _final_params(workdir: Path, step: int):
    from bertjax.weights import pretrained

    return pretrained.read_run(workdir / "checkpoints" / str(step)).params


def test_sigkill_at_a_random_step_then_resume_is_bitwise_equal(tmp_path, sample_files):
    common = ["--config.train.num_train_steps=16", "--config.train.checkpoint_every_steps=2"]
    straight = tmp_path / "straight"
    done = subprocess.run(
        _command(straight, sample_files, tmp_path / "cache", *common), cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    kill_at = random.Random().randint(3, 12)
    print(f"SIGKILL once step {kill_at} has been logged")
    killed = tmp_path / "killed"
    command = _command(killed, sample_files, tmp_path / "cache", *common)
    interrupted = run_until(command, killed, kill_at, signal.SIGKILL, ENV)
    assert interrupted.returncode == -signal.SIGKILL
    assert steps_logged(killed) < 16  # it really was cut short
    resumed = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    ours, reference = _final_params(killed, 16), _final_params(straight, 16)
    assert ours.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)


@pytest.mark.parametrize("loader", ["threads", "processes"])
def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path, sample_files, loader):
    """With loader processes the signal goes to the whole process group, as a terminal's Ctrl-C or a
    scheduler's preemption does: it ends grain's loader processes (they keep the default action),
    and the main process still saves, closes the loader and exits 0. (The shared memory of the
    batches the loaders had in flight is then reclaimed by Python's resource tracker, with its
    "leaked shared_memory" warning; a run that ends normally releases it all, see
    test_pretraining_data.)"""
    workdir = tmp_path / "run"
    processes = ["--config.data.num_processes=2", "--config.data.num_threads=1"] if loader == "processes" else []
    command = _command(
        workdir,
        sample_files,
        tmp_path / "cache",
        "--config.train.num_train_steps=100000",
        "--config.train.checkpoint_every_steps=100000",
        *processes,
    )
    result = run_until(command, workdir, 3, signal.SIGTERM, ENV, group=loader == "processes")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped by a signal: checkpoint saved at step" in result.stdout
    step = int(result.stdout.split("checkpoint saved at step ")[1].split()[0])
    assert step >= 3 and committed_checkpoints(workdir) == [step]
    progress = json.loads((workdir / "checkpoints" / str(step) / "progress" / "metadata").read_text())
    assert progress["step"] == step


def test_nonfinite_loss_stops_or_is_skipped(tmp_path, sample_files):
    diverge = ["--config.optim.learning_rate=1e37", "--config.optim.warmup_steps=0", "--config.optim.clip_norm=0"]
    stop = tmp_path / "stop"
    command = _command(
        stop,
        sample_files,
        tmp_path / "cache",
        *diverge,
        "--config.train.checkpoint_every_steps=1",
        "--config.train.num_train_steps=8",
    )
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: non-finite loss or gradient at step ") and "train.nonfinite=stop" in line
    bad_step = int(line.split("at step ")[1].split()[0])
    saved = committed_checkpoints(stop)
    assert saved and max(saved) == bad_step - 1  # nothing from the bad step on was saved
    params = _final_params(stop, max(saved))
    assert all(np.isfinite(v).all() for v in params.values())

    skip = tmp_path / "skip"
    command = _command(
        skip,
        sample_files,
        tmp_path / "cache",
        *diverge,
        "--config.train.nonfinite=skip",
        "--config.train.num_train_steps=8",
    )
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    last = train_records(skip)[-1]
    assert last["step"] == 8 and 1 <= last["skipped_steps"] <= 7
    assert all(np.isfinite(v).all() for v in _final_params(skip, 8).values())
