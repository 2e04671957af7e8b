"""Fine-tuning through the shared training core: gradient accumulation equals the full batch, a
non-finite loss stops with one line (or is skipped), and two processes train as one."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from pretrain_runs import ROOT, cpu_env, start_two_processes
from test_finetune import finetune, write_toy
from test_train import MODEL

from bertjax.config import MeshConfig, OptimConfig
from bertjax.data.labelled import TaskSpec
from bertjax.parallel import sharding
from bertjax.tasks.classification import ClassificationTask, RegressionTask
from bertjax.training import optim, update
from bertjax.training.state import create_sharded_state


def _task(cls, kind: str):
    spec = TaskSpec(
        name="toy", kind=kind, labels=("a", "b", "c") if kind == "classification" else (), metrics=(), layouts={}
    )
    return cls(spec, train=None, evals={}, tests={})


def _batch(rng, rows=8, length=16, classes=3):
    lengths = rng.integers(4, length + 1, size=rows)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    weights = np.ones(rows, np.float32)
    weights[-3:] = 0  # padding rows of a last, short batch
    return {
        "input_ids": (rng.integers(5, MODEL.vocab_size, (rows, length)) * mask).astype(np.int32),
        "token_type_ids": np.zeros((rows, length), np.int32),
        "attention_mask": mask,
        "labels": rng.integers(0, classes, rows).astype(np.float32),
        "weights": weights,
    }


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_accumulated_fine_tuning_steps_equal_the_full_batch(kind):
    """The update splits the batch into microbatches normalised by the whole batch's real rows:
    loss, accuracy, gradient norm and the new parameters equal one full-batch step, and the loss
    is the task's (cross-entropy or squared error over the rows of weight 1)."""
    task = _task(ClassificationTask if kind == "classification" else RegressionTask, kind)
    model = task.model(MODEL)
    tx, schedule = optim.make_optimizer(OptimConfig(warmup_steps=2, learning_rate=1e-3), 10)
    ids = jax.numpy.zeros((1, 16), jax.numpy.int32)
    mesh = sharding.make_mesh(MeshConfig())
    init = lambda key: model.init({"params": key}, ids, ids, ids)["params"]  # noqa: E731
    state, _ = create_sharded_state(jax.random.key(0), init, tx, mesh, MeshConfig())
    batch = _batch(np.random.default_rng(0))

    def step(count):
        return jax.jit(
            lambda s, b: update.train_step(
                s,
                b,
                jax.random.key(1),
                objective=task.objective(model),
                tx=tx,
                schedule=schedule,
                grad_accum_steps=count,
            )
        )

    full_state, full = step(1)(state, batch)
    acc_state, acc = step(4)(state, batch)
    logits = np.asarray(model.apply({"params": state.params}, *(batch[k] for k in task.input_keys)))
    real = batch["weights"] == 1
    if kind == "classification":
        log_probs = np.asarray(jax.nn.log_softmax(logits))[real]
        expected = -log_probs[np.arange(real.sum()), batch["labels"][real].astype(int)].mean()
    else:
        expected = np.mean((logits[real, 0] - batch["labels"][real]) ** 2)
    np.testing.assert_allclose(full["loss"], expected, rtol=1e-5)
    for name in full:
        np.testing.assert_allclose(acc[name], full[name], rtol=2e-5, atol=1e-7, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), acc_state.params, full_state.params)


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


def test_accumulation_in_a_run_gives_the_full_batchs_results(tmp_path, vocab_file):
    """optim.grad_accum_steps is honoured by `bertjax.finetune`: the same losses, epochs and test
    predictions as one full batch (no dropout, so the microbatches see the same network)."""
    toy = write_toy(tmp_path / "toy")
    args = _toy_args(
        toy, vocab_file, "--config.model.hidden_dropout_prob=0", "--config.model.attention_probs_dropout_prob=0"
    )
    finetune(tmp_path / "full", *args)
    finetune(tmp_path / "accum", *args, "--config.optim.grad_accum_steps=4")
    full, accum = _train_losses(tmp_path / "full"), _train_losses(tmp_path / "accum")
    assert full.keys() == accum.keys() and len(full) > 10
    for step in full:
        assert abs(full[step] - accum[step]) <= 1e-4 * abs(full[step]), (step, full[step], accum[step])
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("full", "accum")]
    assert results[0]["best"]["dev"]["accuracy"] == results[1]["best"]["dev"]["accuracy"]


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
    every batch, train as one process x 4 devices: the same losses, epochs and test predictions."""
    toy = write_toy(tmp_path / "toy")
    args = _toy_args(toy, vocab_file, "--config.train.batch_size=8", "--config.train.eval_batch_size=16")
    command = [sys.executable, "-m", "bertjax.finetune", "--config=configs/textclf.py:runlocal", *args]
    single = tmp_path / "single"
    one = subprocess.run([*command, f"--workdir={single}"], cwd=ROOT, env=cpu_env(4), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]

    multi = tmp_path / "multi"
    processes = start_two_processes([[*command, f"--workdir={multi}"]] * 2)
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
