"""Command lines of short `python -m bertjax.pretrain` runs on the sample corpus, and running a
command until it has logged a step, for the tests."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pretrain_command(workdir: Path, sample_files: dict, cache: Path, *overrides: str) -> list[str]:
    """A runlocal pretraining run on 200 news documents, logging every step, its data cached in `cache`."""
    return [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        "--config=configs/pretrain.py:runlocal",
        f"--workdir={workdir}",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
        "--config.data.max_documents=200",
        f"--config.data.cache_dir={cache}",
        "--config.train.log_every_steps=1",
        *overrides,
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(devices: int) -> dict[str, str]:
    """The environment of a process with `devices` simulated CPU devices."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
    }


def start_two_processes(commands: list[list[str]], devices: int = 2) -> list[subprocess.Popen]:
    """`commands[i]` started as process i of 2, joined by jax.distributed on 127.0.0.1."""
    port = free_port()
    return [
        subprocess.Popen(
            [
                *command,
                "--config.distributed.mode=explicit",
                f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                "--config.distributed.num_processes=2",
                f"--config.distributed.process_id={i}",
                "--config.distributed.timeout_seconds=120",
            ],
            cwd=ROOT,
            env=cpu_env(devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, command in enumerate(commands)
    ]


def train_records(workdir: Path) -> list[dict]:
    """The train lines of a run's metrics.jsonl."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if r["split"] == "train"]


def steps_logged(workdir: Path) -> int:
    return max((r["step"] for r in train_records(workdir)), default=0)


def committed_checkpoints(workdir: Path) -> list[int]:
    """The steps of the checkpoints orbax has committed in `workdir` (in-flight ones have a suffix)."""
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def run_until(
    command, workdir: Path, step: int, sig: int, env: dict, group: bool = False, checkpointed: bool = False
) -> subprocess.CompletedProcess:
    """Runs `command` until `step` is logged in `workdir` (and, with `checkpointed`, a checkpoint is
    committed: orbax commits asynchronously, behind the logged steps), then sends `sig` to it (with
    `group`, to its whole process group, as a terminal's Ctrl-C or a cluster's preemption does)."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    deadline = time.time() + 300

    def reached() -> bool:
        return steps_logged(workdir) >= step and (not checkpointed or bool(committed_checkpoints(workdir)))

    while not reached() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if group:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
