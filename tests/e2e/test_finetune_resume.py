"""Fine-tuning killed and started again with the same command resumes from its latest checkpoint
and ends exactly as an uninterrupted run (SIGTERM's own checkpoint: tests/e2e/test_sweep_and_report.py)."""

import json
import os
import random
import signal
import sys

import numpy as np
from pretrain_runs import committed_checkpoints, run_until, steps_logged, train_records
from test_finetune import finetune, write_toy

from bertjax.weights import pretrained


def test_killed_fine_tuning_resumes_to_the_same_results(tmp_path, vocab_file):
    """SIGKILL at a random step, then the same command: the epochs, the best epoch, its weights
    and the test predictions equal an uninterrupted run's."""
    toy = write_toy(tmp_path / "toy")
    common = [
        f"--config.task.train_file={toy / 'train.tsv'}",
        f"--config.task.test_file={toy / 'test.tsv'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.num_epochs=2",
        "--config.optim.learning_rate=1e-3",
        "--config.train.log_every_steps=1",
        "--config.train.checkpoint_every_steps=4",
    ]
    straight = tmp_path / "straight"
    finetune(straight, *common)
    reference = json.loads((straight / "results.json").read_text())
    assert not (straight / "checkpoints").exists()  # finished: train.keep_checkpoint=False deletes it
    total = max(r["step"] for r in train_records(straight))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "bertjax.finetune", "--config=configs/textclf.py:runlocal", *common]

    kill_at = random.Random().randint(6, total - 6)
    workdir = tmp_path / "killed"
    run_until([*command, f"--workdir={workdir}"], workdir, kill_at, signal.SIGKILL, env, checkpointed=True)
    assert not (workdir / "results.json").exists() and steps_logged(workdir) < total
    # The latest is kept (killed between committing a new checkpoint and deleting the older one,
    # both are there; the newer one is resumed from).
    saved = committed_checkpoints(workdir)
    assert 1 <= len(saved) <= 2 and 4 <= saved[-1] <= steps_logged(workdir), saved
    finetune(workdir, *common, "--config.train.keep_checkpoint=True")
    assert committed_checkpoints(workdir) == [total]
    # It went on from the checkpoint: steps up to it were trained (and logged) once.
    logged = [r["step"] for r in train_records(workdir)]
    assert all(logged.count(step) == 1 for step in range(1, saved[-1] + 1))
    assert sorted(set(logged)) == list(range(1, total + 1))
    results = json.loads((workdir / "results.json").read_text())
    for key in ("epochs", "best", "test", "main_split"):
        assert results[key] == reference[key], (key, kill_at)
    ours, theirs = pretrained.load(workdir / "best").params, pretrained.load(straight / "best").params
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert (workdir / "predictions" / "test.tsv").read_text() == (straight / "predictions" / "test.tsv").read_text()
