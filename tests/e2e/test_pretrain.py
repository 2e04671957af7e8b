"""`python -m bertjax.pretrain` end to end: it learns, checkpoints, resumes; bad input exits 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]


def _run(workdir, *overrides, arg="runlocal", sample_files=None, check=True, config="configs/pretrain.py"):
    command = [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        f"--config={config}:{arg}",
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
        "--config.train.eval_batch_size=4",  # held-out batches of their own size (runlocal: 2 of them)
    ]
    straight = tmp_path / "straight"
    result = _run(straight, *common, sample_files=sample_files)
    assert "held-out MLM accuracy" in result.stdout
    assert json.loads((straight / "final_eval.json").read_text())["examples"] == 2 * 4
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
        "dropout_out_of_range",
        "no_layers",
        "bool_for_int",
        "missing_config_file",
        "workdir_is_a_file",
        "cache_dir_is_a_file",
        "vocab_is_a_folder",
        "corpus_is_a_folder",
        "mesh_too_big",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, sample_files, case):
    """Each class of bad input (a bad value, a value out of range, a path of the wrong kind, a missing
    config file, a failure found after the run began) ends in one line, exit code 2, and a workdir
    left as it was: not created."""
    empty, latin1, vocab = _bad_files(tmp_path)
    a_file, a_folder = tmp_path / "a_file", tmp_path / "a_folder"
    a_file.write_text("x\n")
    a_folder.mkdir()
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
        "dropout_out_of_range": (
            "runlocal",
            ["--config.model.hidden_dropout_prob=1.5"],
            "model.hidden_dropout_prob=1.5 must be in [0.0, 1.0)",
        ),
        "no_layers": ("runlocal", ["--config.model.num_hidden_layers=0"], "model.num_hidden_layers=0 must be >= 1"),
        "bool_for_int": ("runlocal", ["--config.train.eval_batches=True"], "--config.train.eval_batches=True"),
        "missing_config_file": ("runlocal", [], "--config: [Errno 2] No such file or directory"),
        "workdir_is_a_file": ("runlocal", [], f"workdir {a_file} is not a folder"),
        "cache_dir_is_a_file": ("runlocal", [f"--config.data.cache_dir={a_file}"], f"{a_file} is not a folder"),
        "vocab_is_a_folder": ("runlocal", [f"--config.data.vocab_file={a_folder}"], "is a folder, not a file"),
        "corpus_is_a_folder": ("runlocal", [f"--config.data.train_files={a_folder}"], f"{a_folder} is not a file"),
        "mesh_too_big": ("runlocal", ["--config.mesh.data=3"], "need 3 devices, found 1"),
    }[case]
    workdir = a_file if case == "workdir_is_a_file" else tmp_path / "run"
    config = "configs/nope.py" if case == "missing_config_file" else "configs/pretrain.py"
    vocab_arg = [] if case == "vocab_is_a_folder" else [f"--config.data.vocab_file={sample_files['vocab']}"]
    result = _run(workdir, *(vocab_arg + overrides), arg=arg, check=False, config=config)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert a_file.read_text() == "x\n" if case == "workdir_is_a_file" else not workdir.exists()
