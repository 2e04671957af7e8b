"""`python -m bertjax.finetune` end to end: learns, keeps the best checkpoint, writes GLUE files,
initialises from Hugging Face weights, and refuses bad input with one line and exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from glue_files import write_glue_dir

from bertjax.weights import pretrained, stored

ROOT = Path(__file__).resolve().parents[2]
POSITIVE = "good great excellent wonderful fine nice superb lovely".split()
NEGATIVE = "bad awful terrible poor horrible nasty dreadful ugly".split()
FILLER = "the movie was and it a plot acting film story".split()


def write_toy(folder: Path, seed: int = 0) -> Path:
    """A separable sentiment set: one telling word among filler words."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 320), ("test", 120)):
        lines = ["text\tlabel"]
        for _ in range(n):
            y = int(rng.integers(0, 2))
            words = list(rng.choice(FILLER, 6)) + [rng.choice(POSITIVE if y else NEGATIVE)]
            rng.shuffle(words)
            lines.append(" ".join(words) + "\t" + ("positive" if y else "negative"))
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def finetune(workdir, *args, config="configs/textclf.py:runlocal", check=True):
    command = [sys.executable, "-m", "bertjax.finetune", f"--config={config}", f"--workdir={workdir}", *map(str, args)]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_custom_task_learns_and_keeps_the_best_checkpoint(tmp_path, vocab_file):
    toy = write_toy(tmp_path / "toy")
    workdir = tmp_path / "run"
    result = finetune(
        workdir,
        f"--config.task.train_file={toy / 'train.tsv'}",
        f"--config.task.test_file={toy / 'test.tsv'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.num_epochs=3",
        "--config.optim.learning_rate=1e-3",
        "--config.model.scan_layers=True",  # a scanned encoder; its best checkpoint is written per layer
    )
    results = json.loads((workdir / "results.json").read_text())
    assert results["test"]["test"]["accuracy"] >= 0.95, result.stdout
    assert len(results["epochs"]) == 3
    best_score = max(e["dev"]["score"] for e in results["epochs"])
    assert results["best"]["dev"]["score"] == best_score
    predictions = (workdir / "predictions" / "test.tsv").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and len(predictions) == 121
    assert {line.split("\t")[1] for line in predictions[1:]} <= {"negative", "positive"}
    best = pretrained.load(workdir / "best")
    assert best.labels == ("negative", "positive") and "classifier" in best.groups()
    on_disk = stored.saved_tree(workdir / "best" / "params")
    assert "layer_0" in on_disk["bert"] and "layers" not in on_disk["bert"]
    assert (workdir / "curves.png").stat().st_size > 10_000
    # Throughput: every toy row fits 32 tokens, so every batch is cut to 32 columns and the useful
    # FLOPs per row are those of a 32-token sequence (one CPU device; no datasheet rate, no MFU).
    saved = json.loads((workdir / "config.json").read_text())["config"]
    per_row = pretrained.load(workdir / "best").config.train_flops(32)
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["split"] == "train"]
    assert train and saved["task"]["pad_to_multiple_of"] == 32
    for record in train:
        assert record["seq_per_second"] > 0 and "mfu" not in record
        assert record["tflops_per_device"] == pytest.approx(per_row * record["seq_per_second"] / 1e12, rel=1e-9)
    again = finetune(workdir, f"--config.task.train_file={toy / 'train.tsv'}", f"--config.task.vocab_file={vocab_file}")
    assert "holds a finished run" in again.stdout


@pytest.mark.parametrize("task", ["rte", "stsb", "mnli"])
def test_glue_tasks_write_leaderboard_files(tmp_path, vocab_file, task):
    glue_dir = write_glue_dir(tmp_path / "glue", rows=24)
    workdir = tmp_path / task
    finetune(
        workdir,
        f"--config.task.glue_dir={glue_dir}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.eval_batch_size=8",
        config=f"configs/glue.py:task={task},runlocal",
    )
    results = json.loads((workdir / "results.json").read_text())
    files = {
        "rte": {"RTE.tsv": {"entailment", "not_entailment"}},
        "stsb": {"STS-B.tsv": None},
        "mnli": {n: {"contradiction", "entailment", "neutral"} for n in ("MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv")},
    }[task]
    assert sorted(p.name for p in (workdir / "submission").iterdir()) == sorted(files)
    for name, labels in files.items():
        lines = (workdir / "submission" / name).read_text().splitlines()
        assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == [
            str(i) for i in range(24)
        ]
        cells = [line.split("\t")[1] for line in lines[1:]]
        if labels is None:
            assert all(0.0 <= float(c) <= 5.0 for c in cells)
        else:
            assert set(cells) <= labels
    if task == "mnli":
        assert set(results["best"]) >= {"dev_matched", "dev_mismatched"}
    if task == "stsb":
        assert set(results["best"]["dev"]) == {"pearson", "spearman", "score"}


def _tiny_hf(folder: Path, vocab_file: Path, vocab_size: int = 30522) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text(vocab_file.read_text())
    return folder


def test_init_from_hugging_face_reports_fresh_heads(tmp_path, vocab_file):
    hf = _tiny_hf(tmp_path / "hf", vocab_file)
    toy = write_toy(tmp_path / "toy")
    result = finetune(
        tmp_path / "run",
        f"--config.init={hf}",
        f"--config.task.train_file={toy / 'train.tsv'}",
        "--config.train.num_epochs=1",
    )
    assert "loaded encoder, pooler; initialised fresh: classifier" in result.stdout


@pytest.mark.parametrize(
    "case",
    [
        "unknown_task",
        "unknown_key",
        "ragged_row",
        "unknown_label",
        "vocab_mismatch",
        "empty_split",
        "out_of_range",
        "train_file_is_a_folder",
        "glue_dir_is_a_file",
        "workdir_is_a_file",
        "missing_config_file",
        "unknown_config_argument",
        "mesh_too_big",
        "batch_not_split_by_accumulation",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, vocab_file, case):
    """One line, exit code 2, and a workdir left as it was (not created) for every class of bad input."""
    toy = write_toy(tmp_path / "toy")
    a_file = tmp_path / "a_file"
    a_file.write_text("x\n")
    workdir = tmp_path / "run"
    train = toy / "train.tsv"
    lines = train.read_text().splitlines()
    extra = [f"--config.task.vocab_file={vocab_file}", f"--config.task.train_file={train}"]
    config = "configs/textclf.py:runlocal"
    if case == "unknown_task":
        config, expected = "configs/glue.py:task=mnli2,runlocal", "unknown GLUE task 'mnli2'"
        extra = extra[:1]
    elif case == "unknown_key":
        config, expected = "configs/glue.py:task=rte,runlocal", "unknown config key task.train_file"
    elif case == "ragged_row":
        train.write_text("\n".join(lines[:7] + ["just one column"] + lines[7:]) + "\n")
        expected = f"{train} line 8: expected 2 columns, found 1"
    elif case == "unknown_label":
        dev = toy / "dev.tsv"
        dev.write_text("text\tlabel\nfine film\tpositive\nodd film\tmixed\n")
        extra.append(f"--config.task.dev_file={dev}")
        expected = "line 3: unknown label 'mixed'"
    elif case == "vocab_mismatch":
        hf = _tiny_hf(tmp_path / "hf", vocab_file, vocab_size=30000)
        extra = [f"--config.init={hf}", f"--config.task.train_file={train}"]
        expected = "has vocab_size 30000 but the vocab"
    elif case == "empty_split":
        (toy / "test.tsv").write_text("text\tlabel\n")
        extra.append(f"--config.task.test_file={toy / 'test.tsv'}")
        expected = "test.tsv has no examples"
    elif case == "out_of_range":
        extra.append("--config.task.dev_fraction=1.5")
        expected = "task.dev_fraction=1.5 must be in [0.0, 1.0)"
    elif case == "train_file_is_a_folder":
        extra[1] = f"--config.task.train_file={toy}"
        expected = f"data file {toy} is a folder, not a file"
    elif case == "glue_dir_is_a_file":
        config, extra = "configs/glue.py:task=rte,runlocal", [*extra[:1], f"--config.task.glue_dir={a_file}"]
        expected = f"task.glue_dir: {a_file} is not a folder"
    elif case == "workdir_is_a_file":
        workdir, expected = a_file, f"workdir {a_file} is not a folder"
    elif case == "missing_config_file":
        config, expected = "configs/nope.py", "--config: [Errno 2] No such file or directory"
    elif case == "unknown_config_argument":
        config, expected = "configs/glue.py:task=rte,fast", "--config: ValueError: unknown config argument 'fast'"
    elif case == "mesh_too_big":
        extra.append("--config.mesh.data=3")
        expected = "need 3 devices, found 1"
    else:
        extra.append("--config.optim.grad_accum_steps=3")
        expected = "train.batch_size=8 is not divisible by optim.grad_accum_steps=3"
    result = finetune(workdir, *extra, config=config, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert a_file.read_text() == "x\n" if case == "workdir_is_a_file" else not workdir.exists()
