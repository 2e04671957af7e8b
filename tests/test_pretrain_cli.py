"""`python -m bertjax.pretrain` end to end: it learns, checkpoints, resumes; bad input exits 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def _run(workdir, *overrides, arg="runlocal", sample_files=None, check=True):
    command = [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        f"--config=configs/pretrain.py:{arg}",
        f"--workdir={workdir}",
        "--config.data.max_documents=300",
    ]
    if sample_files:
        command += [
            f"--config.data.train_files={sample_files['news']}",
            f"--config.data.vocab_file={sample_files['vocab']}",
        ]
    command += list(overrides)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _metrics(workdir, split):
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["split"] == split}


def test_pretrain_learns_writes_everything_and_resumes_exactly(tmp_path, sample_files):
    common = [
        "--config.optim.learning_rate=2e-3",
        "--config.optim.schedule=constant",
        "--config.train.num_train_steps=30",
    ]
    straight = tmp_path / "straight"
    result = _run(straight, *common, sample_files=sample_files)
    assert "held-out MLM accuracy" in result.stdout
    train_metrics = _metrics(straight, "train")
    assert train_metrics[30]["loss"] < train_metrics[5]["loss"] - 0.5
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["10", "20", "30"]
    assert (straight / "curves.png").stat().st_size > 10_000
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))
    saved_config = json.loads((straight / "config.json").read_text())
    assert saved_config["config"]["model"]["num_hidden_layers"] == 2
    # Throughput in useful FLOPs, by the bench's formula (one CPU device; no datasheet rate, no MFU).
    model, data = ModelConfig(**saved_config["config"]["model"]), saved_config["config"]["data"]
    flops = model.train_flops(data["max_seq_length"], data["max_predictions_per_seq"])
    for record in train_metrics.values():
        assert record["tflops_per_device"] == pytest.approx(flops * record["seq_per_second"] / 1e12, rel=1e-9)
        assert "mfu" not in record

    # The same run, stopped after 10 steps and started again with the same command: the
    # later steps see the same batches and dropout, so the numbers are identical.
    resumed = tmp_path / "resumed"
    _run(resumed, *common[:-1], "--config.train.num_train_steps=10", sample_files=sample_files)
    _run(resumed, *common, sample_files=sample_files)
    again = _metrics(resumed, "train")
    for step in (15, 20, 25, 30):
        assert again[step]["loss"] == train_metrics[step]["loss"], step
    assert json.loads((resumed / "final_eval.json").read_text()) == json.loads(
        (straight / "final_eval.json").read_text()
    )

    # A workdir holding a checkpoint of another model shape is refused, and kept.
    other = _run(resumed, *common, arg="runlocal,size=mini", sample_files=sample_files, check=False)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [other.stderr.strip()]
    assert "another model shape" in other.stderr
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["10", "20", "30"]


def _bad_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"fine\ncaf\xe9\n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    return empty, latin1, vocab


@pytest.mark.parametrize(
    "case",
    [
        "unknown_size",
        "unknown_key",
        "short_seq",
        "long_seq",
        "zero_predictions",
        "missing_corpus",
        "empty_corpus",
        "non_utf8_corpus",
        "vocab_without_mask",
        "attention_dropout",
        "negative_processes",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, sample_files, case):
    empty, latin1, vocab = _bad_files(tmp_path)
    arg, overrides, expected = {
        "unknown_size": ("size=huge", [], "unknown size"),
        "unknown_key": ("runlocal", ["--config.train.bogus=1"], "bogus"),
        "short_seq": ("runlocal", ["--config.data.max_seq_length=4"], "max_seq_length=4 is below"),
        "long_seq": ("runlocal", ["--config.data.max_seq_length=1024"], "exceeds model.max_position_embeddings"),
        "zero_predictions": ("runlocal", ["--config.data.max_predictions_per_seq=0"], "max_predictions_per_seq=0"),
        "missing_corpus": ("runlocal", [f"--config.data.train_files={tmp_path}/nope.txt"], "nope.txt does not exist"),
        "empty_corpus": ("runlocal", [f"--config.data.train_files={empty}"], "empty.txt is empty"),
        "non_utf8_corpus": ("runlocal", [f"--config.data.train_files={latin1}"], "latin1.txt line 2 is not UTF-8"),
        "vocab_without_mask": ("runlocal", [f"--config.data.vocab_file={vocab}"], "has no [MASK] token"),
        "attention_dropout": ("runlocal", ["--config.model.attention=xla"], "set model.attention_probs_dropout_prob=0"),
        "negative_processes": ("runlocal", ["--config.data.num_processes=-1"], "data.num_processes=-1 must be >= 0"),
    }[case]
    workdir = tmp_path / "run"
    result = _run(workdir, *([f"--config.data.vocab_file={sample_files['vocab']}"] + overrides), arg=arg, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (workdir / "checkpoints").exists()
