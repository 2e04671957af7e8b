"""Fine-tuning runs through the shared training core: a non-finite loss stops with one line (or is
skipped), and two processes with gradient accumulation train as one process with whole batches."""

import json
import subprocess
import sys

from pretrain_runs import ROOT, cpu_env, start_two_processes
from test_finetune import finetune, write_toy


def _toy_args(toy, vocab_file, *extra):
    return [
        f"--config.task.train_file={toy / 'train.tsv'}",
        f"--config.task.test_file={toy / 'test.tsv'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.log_every_steps=1",
        *extra,
    ]


def _train_losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["split"] == "train"}


def test_nonfinite_loss_stops_fine_tuning_with_one_line_or_is_skipped(tmp_path, vocab_file):
    toy = write_toy(tmp_path / "toy")
    diverge = ["--config.optim.learning_rate=1e37", "--config.optim.warmup_fraction=0", "--config.optim.clip_norm=0"]
    stop = tmp_path / "stop"
    result = finetune(stop, *_toy_args(toy, vocab_file, *diverge), check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: non-finite loss or gradient at step ") and "train.nonfinite=stop" in line, line
    assert not (stop / "results.json").exists() and not (stop / "best").exists()

    skip = tmp_path / "skip"
    result = finetune(skip, *_toy_args(toy, vocab_file, *diverge, "--config.train.nonfinite=skip"))
    last = [json.loads(r) for r in (skip / "metrics.jsonl").read_text().splitlines() if '"train"' in r][-1]
    assert last["skipped_steps"] >= 1
    assert (skip / "results.json").is_file()


def test_two_processes_fine_tune_as_one_process_with_as_many_devices(tmp_path, vocab_file):
    """Two processes x 2 CPU devices joined by jax.distributed on 127.0.0.1, each feeding its half of
    every batch, and accumulating gradients over 2 microbatches, train as one process x 4 devices
    with whole batches: the same losses, epochs and test predictions (no dropout, whose masks
    depend on the microbatch)."""
    toy = write_toy(tmp_path / "toy")
    no_dropout = ("--config.model.hidden_dropout_prob=0", "--config.model.attention_probs_dropout_prob=0")
    args = _toy_args(toy, vocab_file, "--config.train.batch_size=8", "--config.train.eval_batch_size=16", *no_dropout)
    command = [sys.executable, "-m", "bertjax.finetune", "--config=configs/textclf.py:runlocal", *args]
    single = tmp_path / "single"
    one = subprocess.run([*command, f"--workdir={single}"], cwd=ROOT, env=cpu_env(4), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]

    multi = tmp_path / "multi"
    processes = start_two_processes([[*command, f"--workdir={multi}", "--config.optim.grad_accum_steps=2"]] * 2)
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    ours, reference = _train_losses(multi), _train_losses(single)
    assert ours.keys() == reference.keys() and len(ours) > 10
    for step in reference:
        assert abs(ours[step] - reference[step]) <= 1e-5 * abs(reference[step]), (step, ours[step], reference[step])
    results = [json.loads((d / "results.json").read_text()) for d in (multi, single)]
    assert [e["dev"]["accuracy"] for e in results[0]["epochs"]] == [e["dev"]["accuracy"] for e in results[1]["epochs"]]
    assert (multi / "predictions" / "test.tsv").read_text() == (single / "predictions" / "test.tsv").read_text()
