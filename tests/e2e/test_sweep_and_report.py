"""Sweeps (expansion, command lines, skip-finished, tables) and the GLUE report, on fake and real runs."""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pretrain_runs import run_until
from test_finetune import write_toy

from bertjax import report, sweep
from bertjax.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_glue_config_declares_the_bert_paper_grid():
    runs = sweep.expand(sweep.load_sweep(str(ROOT / "configs" / "glue.py")))
    assert len(runs) == 4 * 2 * 3 * 3 and len({r.name for r in runs}) == len(runs)
    assert {r.overrides["optim.learning_rate"] for r in runs} == {5e-5, 4e-5, 3e-5, 2e-5}
    assert {r.overrides["train.batch_size"] for r in runs} == {16, 32}
    assert {r.overrides["train.num_epochs"] for r in runs} == {2, 3, 4}
    assert len({r.setting for r in runs}) == 24  # settings differ in all but the seed
    with pytest.raises(ConfigError, match="twice"):
        sweep.expand(lambda add: [add(a=1), add(a=1)])


def _fake_run(folder: Path, task: str, dev: dict, epoch: float = 2.0) -> None:
    folder.mkdir(parents=True)
    main = "dev_matched" if task == "mnli" else "dev"
    best = {"epoch": epoch, "step": 10, **dev}
    (folder / "results.json").write_text(json.dumps({"task": task, "main_split": main, "best": best, "test": {}}))


def _dev(**metrics):
    return {"dev": {**metrics, "score": float(np.mean(list(metrics.values())))}}


def test_glue_report_on_fake_runs(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "cola", "cola", _dev(matthews_corrcoef=0.5))
    _fake_run(runs / "sst2/a", "sst2", _dev(accuracy=0.90))
    _fake_run(runs / "sst2/b", "sst2", _dev(accuracy=0.93))  # the better of two runs is taken
    _fake_run(runs / "mrpc", "mrpc", _dev(f1=0.88, accuracy=0.84))
    _fake_run(runs / "stsb", "stsb", _dev(pearson=0.87, spearman=0.86))
    _fake_run(runs / "qqp", "qqp", _dev(f1=0.7, accuracy=0.9))
    mnli = {"dev_matched": {"accuracy": 0.84, "score": 0.84}, "dev_mismatched": {"accuracy": 0.83, "score": 0.83}}
    _fake_run(runs / "mnli", "mnli", mnli)
    _fake_run(runs / "qnli", "qnli", _dev(accuracy=0.91))
    _fake_run(runs / "rte", "rte", _dev(accuracy=0.66))
    _fake_run(runs / "other", "news", _dev(accuracy=0.99))  # not GLUE: ignored
    partial = report.glue_report(runs, tmp_path / "partial")
    assert partial["cells"][-1].endswith("(8/9 tasks)")
    _fake_run(runs / "wnli", "wnli", _dev(accuracy=0.56))
    result = report.glue_report(runs, tmp_path / "out")
    cells = dict(zip(result["headers"], result["cells"]))
    assert cells["CoLA (MCC)"] == "50.0" and cells["SST-2 (acc)"] == "93.0" and cells["MNLI-mm (acc)"] == "83.0"
    expected = np.mean([0.5, 0.93, 0.86, 0.865, 0.8, 0.835, 0.91, 0.66, 0.56]) * 100
    assert cells["GLUE score"] == f"{expected:.1f}"
    assert result["runs"]["sst2"].endswith("sst2/b")
    assert (tmp_path / "out" / "glue_report.png").stat().st_size > 5_000
    assert "| 50.0 | 93.0 |" in (tmp_path / "out" / "glue_report.md").read_text()


def test_sweep_runs_skips_finished_and_tabulates(tmp_path, vocab_file):
    toy = write_toy(tmp_path / "toy")
    config_file = tmp_path / "toy_sweep.py"
    config_file.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('textclf', {str(ROOT / 'configs' / 'textclf.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
        "def get_config(arg=None):\n    return module.get_config('runlocal')\n"
        "def sweep(add):\n"
        "    for lr in (1e-3, 3e-4):\n        for seed in (0, 1):\n"
        "            add(**{'optim.learning_rate': lr, 'train.seed': seed})\n"
    )
    common = [
        f"--config={config_file}",
        f"--workdir={tmp_path / 'sweep'}",
        f"--config.task.train_file={toy / 'train.tsv'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.num_epochs=1",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    printed = subprocess.run(
        [sys.executable, "-m", "bertjax.sweep", *common, "--print_only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.strip().splitlines()
    assert len(lines) == 4 and all("bertjax.finetune" in line for line in lines)
    assert "--config.optim.learning_rate=0.0003" in lines[2] and "--config.train.seed=0" in lines[2]
    assert f"--config.task.train_file={toy / 'train.tsv'}" in lines[0]

    # SIGTERM during the first run: it is checkpointed and the sweep ends there (exit 0).
    first_workdir = Path(next(a for a in shlex.split(lines[0]) if a.startswith("--workdir=")).split("=", 1)[1])
    command = [sys.executable, "-m", "bertjax.sweep", *common, "--config.train.log_every_steps=1"]
    stopped = run_until(command, first_workdir, 2, signal.SIGTERM, env)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped by a signal: checkpoint saved at step" in stopped.stdout and "[2/4]" not in stopped.stdout
    assert (first_workdir / "checkpoints").is_dir() and not (first_workdir / "results.json").exists()

    # Finish that run by hand (it resumes from its checkpoint): the sweep must skip it.
    first = subprocess.run(lines[0], shell=True, cwd=ROOT, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-m", "bertjax.sweep", *common], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 runs" in done.stdout and "1 finished already" in done.stdout and "[1/4]" not in done.stdout
    table = (tmp_path / "sweep" / "sweep_results.md").read_text()
    assert "(best)" in table and "| learning_rate=0.001 |" in table.replace(" **(best)**", "")
    rows = (tmp_path / "sweep" / "sweep_results.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("run,setting,optim.learning_rate,train.seed,best_epoch")
    summary = sweep.summarise(sweep.collect(sweep.expand(sweep.load_sweep(str(config_file))), tmp_path / "sweep"))
    assert [s["runs"] for s in summary] == [2, 2]
    assert summary[0]["dev_score_mean"] >= summary[1]["dev_score_mean"]


def test_pretraining_config_declares_a_sweep_of_rate_masking_and_schedule():
    runs = sweep.expand(sweep.load_sweep(str(ROOT / "configs" / "pretrain.py")))
    assert len(runs) == 3 * 2 * 2 and len({r.setting for r in runs}) == 12
    assert {r.overrides["optim.schedule"] for r in runs} == {"linear", "wsd"}
    assert {(r.overrides["data.masked_lm_prob"], r.overrides["data.max_predictions_per_seq"]) for r in runs} == {
        (0.15, 20),
        (0.3, 40),
    }


def test_pretraining_sweep_runs_in_turn_and_tabulates_held_out_accuracy(tmp_path, sample_files):
    """A pretraining config's sweep: bertjax.pretrain command lines with --print_only, its runs one
    after another, a finished run skipped, and the table of final held-out metrics."""
    config_file = tmp_path / "pretrain_sweep.py"
    config_file.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('pretrain', {str(ROOT / 'configs' / 'pretrain.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
        "def get_config(arg=None):\n    return module.get_config('runlocal')\n"
        "def sweep(add):\n"
        "    for lr in (1e-3, 1e-4):\n        add(**{'optim.learning_rate': lr})\n"
    )
    common = [
        f"--config={config_file}",
        f"--workdir={tmp_path / 'sweep'}",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
        "--config.data.max_documents=100",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
        "--config.train.num_train_steps=10",
        "--config.model.num_hidden_layers=1",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    printed = subprocess.run(
        [sys.executable, "-m", "bertjax.sweep", *common, "--print_only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.strip().splitlines()
    assert len(lines) == 2 and all("-m bertjax.pretrain" in line for line in lines)
    assert "--config.optim.learning_rate=0.0001" in lines[1]
    first = subprocess.run(lines[0], shell=True, cwd=ROOT, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-m", "bertjax.sweep", *common], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 finished already" in done.stdout and "[1/2]" not in done.stdout and "[2/2]" in done.stdout
    rows = sweep.collect_pretraining(sweep.expand(sweep.load_sweep(str(config_file))), tmp_path / "sweep")
    finals = [json.loads((tmp_path / "sweep" / r["run"] / "final_eval.json").read_text()) for r in rows]
    assert [r["dev_score"] for r in rows] == [f["mlm_accuracy"] for f in finals] and len(rows) == 2
    table = (tmp_path / "sweep" / "sweep_results.md").read_text()
    assert "held-out MLM accuracy" in table and "(best)" in table and "eval_mlm_accuracy" in table
