"""Two processes x 2 CPU devices, joined by jax.distributed on 127.0.0.1 (gloo collectives),
train exactly as one process x 4 devices: same losses, and the checkpoint resumes in one process;
SIGTERM to one of the processes stops both at the same step with one checkpoint."""

import json
import signal
import subprocess
import time
from pathlib import Path

from pretrain_runs import committed_checkpoints, cpu_env, pretrain_command, start_two_processes, train_records

ROOT = Path(__file__).resolve().parents[2]


def _command(workdir, sample_files, cache, *extra):
    steps = ["--config.train.num_train_steps=6", "--config.train.checkpoint_every_steps=3"]
    return pretrain_command(workdir, sample_files, cache, *steps, "--config.train.eval_every_steps=6", *extra)


def _two_processes(workdir, sample_files, cache, *extra, caches=None) -> list[subprocess.Popen]:
    """The run as two processes; `caches` gives each its own data.cache_dir (hosts that share no disk)."""
    return start_two_processes(
        [_command(workdir, sample_files, caches[i] if caches else cache, *extra) for i in range(2)]
    )


def _losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in train_records(workdir)}


def test_two_processes_equal_one_process_with_as_many_devices(tmp_path, sample_files):
    cache = tmp_path / "cache"
    single = tmp_path / "single"
    one = subprocess.run(
        _command(single, sample_files, cache), cwd=ROOT, env=cpu_env(4), capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]

    multi = tmp_path / "multi"
    processes = _two_processes(multi, sample_files, tmp_path / "multi_cache", "--verbosity=0")
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "held-out MLM accuracy" in outputs[0][0]
    # The corpus is prepared once, by process 0; process 1 sees its probe, waits and finds it.
    assert "prepared " in outputs[0][1] and "prepared " not in outputs[1][1], outputs[1][1][-3000:]
    assert "waiting for process 0" in outputs[1][1]
    assert not list((tmp_path / "multi_cache").glob(".bertjax-probe-*"))

    ours, reference = _losses(multi), _losses(single)
    assert sorted(ours) == sorted(reference) == list(range(1, 7))
    for step in reference:
        assert abs(ours[step] - reference[step]) <= 1e-5 * abs(reference[step]), (step, ours, reference)
    assert committed_checkpoints(multi) == [3, 6]
    final = [json.loads((d / "final_eval.json").read_text()) for d in (multi, single)]
    assert abs(final[0]["mlm_accuracy"] - final[1]["mlm_accuracy"]) < 1e-6

    # The two-process checkpoint restores in one process with 4 devices and training goes on.
    more = subprocess.run(
        _command(multi, sample_files, cache, "--config.train.num_train_steps=8"),
        cwd=ROOT,
        env=cpu_env(4),
        capture_output=True,
        text=True,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert max(_losses(multi)) == 8

    # SIGTERM to the second process only: both stop at the same step, save that one checkpoint
    # together and exit 0.
    # Each process with a cache of its own (hosts with local disks): each prepares its own copy.
    long_run = ("--config.train.num_train_steps=100000", "--config.train.checkpoint_every_steps=100000")
    own_caches = [tmp_path / "host0_cache", tmp_path / "host1_cache"]
    processes = _two_processes(
        multi,
        sample_files,
        None,
        *long_run,
        "--config.train.eval_every_steps=100000",
        "--verbosity=0",
        caches=own_caches,
    )
    deadline = time.monotonic() + 300
    while max(_losses(multi)) < 11 and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "stopped by a signal: checkpoint saved at step" in outputs[0][0], outputs[0][1][-3000:]
    step = int(outputs[0][0].split("checkpoint saved at step ")[1].split()[0])
    saved = committed_checkpoints(multi)
    assert step > 11 and saved[-1] == step and max(_losses(multi)) == step
    assert all(len(list(c.glob("*/meta.json"))) == 1 for c in own_caches)  # both prepared, neither waited
    assert "waiting for process 0" not in outputs[1][1]
    assert not any(list(c.glob(".bertjax-probe-*")) for c in own_caches)


def test_bad_corpus_is_the_same_one_line_error_on_every_host(tmp_path, sample_files):
    """Process 0 prepares the corpus; its one-line error reaches process 1, which would otherwise
    wait for it: both exit 2 with the same message, and neither leaves a checkpoints or cache directory."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    workdir = tmp_path / "run"
    processes = _two_processes(
        workdir, sample_files, tmp_path / "cache", f"--config.data.train_files={empty}", "--verbosity=0"
    )
    outputs = [p.communicate(timeout=300) for p in processes]
    assert "prepare corpus: waiting for process 0" in outputs[1][1], outputs[1][1][-3000:]
    last_lines = [err.strip().splitlines()[-1] for _, err in outputs]
    assert [p.returncode for p in processes] == [2, 2], [err[-2000:] for _, err in outputs]
    assert last_lines[0] == last_lines[1] and "empty.txt is empty" in last_lines[0], last_lines
    assert not (workdir / "checkpoints").exists() and not (tmp_path / "cache").exists()
