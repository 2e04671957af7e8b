"""Hyper-parameter sweeps declared next to their config, run one after another or printed.

    python -m bertjax.sweep --config=configs/glue.py:task=rte --config.init=CKPT --workdir=runs/sweeps/rte
    python -m bertjax.sweep --config=configs/pretrain.py:size=mini --workdir=runs/sweeps/mini
    python -m bertjax.sweep ... --print_only      # one command line per run, for a cluster

A config file declares its sweep as `def sweep(add): ... add(**{"optim.learning_rate": 3e-5, ...})`.
Each call is a run: the config with those overrides, in `<workdir>/<name>`, the name made of the
overrides. A fine-tuning config's runs are `bertjax.finetune` runs scored by their dev score; a
pretraining config's (one with a `data` section) are `bertjax.pretrain` runs scored by their final
held-out MLM accuracy. Runs that already finished (their results.json or final_eval.json exists)
are skipped and an unfinished one resumes from its checkpoint, so a sweep can be started again
after an interruption (SIGTERM or SIGINT checkpoints the running run and ends the sweep). At the
end `<workdir>/sweep_results.{csv,md}` hold every run and, per setting (the overrides other than
the seed), the mean and standard deviation of the score over seeds, with the best setting marked.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax import config as config_lib
from bertjax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Fine-tuning or pretraining config file that declares sweep().", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: one sub-directory per run, and the results tables.")
_PRINT_ONLY = flags.DEFINE_boolean("print_only", False, "Print one command line per run instead of running them.")
flags.mark_flags_as_required(["config", "workdir"])

SEED_KEY = "train.seed"


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a sweep."""

    name: str
    overrides: dict[str, Any]

    @property
    def setting(self) -> str:
        """The run's name without the seed: runs of one setting differ only in seed."""
        return ",".join(f"{_short(k)}={v}" for k, v in self.overrides.items() if k != SEED_KEY) or "default"


def _short(key: str) -> str:
    return key.split(".")[-1]


def expand(sweep_fn: Callable[[Callable[..., None]], None]) -> list[Run]:
    """The runs a config's `sweep(add)` declares, in order; a repeated point is an error."""
    runs: list[Run] = []

    def add(**overrides: Any) -> None:
        name = ",".join(f"{_short(k)}={v}" for k, v in overrides.items()) or "default"
        if any(r.name == name for r in runs):
            raise ConfigError(f"sweep declares run {name} twice")
        runs.append(Run(name, dict(overrides)))

    sweep_fn(add)
    return runs


def load_sweep(config_file: str) -> Callable[[Callable[..., None]], None]:
    """The `sweep` function of a config file (configs/ is not a package: loaded by path)."""
    path = Path(config_file.split(":")[0])
    module = config_lib.load_config_module(path)
    if not hasattr(module, "sweep"):
        raise ConfigError(f"config file {path} declares no sweep(add) function")
    return module.sweep


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the sweep's runs are: the command, the file a finished run leaves, what scores it."""

    command: str
    finished_file: str
    score: str


FINETUNE = Kind("bertjax.finetune", "results.json", "the task's score on its first dev split")
PRETRAIN = Kind("bertjax.pretrain", "final_eval.json", "held-out MLM accuracy at the end of the run")


def kind_of(config: ml_collections.ConfigDict) -> Kind:
    """Pretraining for a config with a `data` section, else fine-tuning."""
    return PRETRAIN if "data" in config else FINETUNE


def command_line(run: Run, config_arg: str, workdir: Path, passed: list[str], kind: Kind = FINETUNE) -> str:
    """The command of one run (the sweep's own overrides, then the run's)."""
    parts = [sys.executable, "-m", kind.command, f"--config={config_arg}", f"--workdir={workdir / run.name}"]
    parts += passed + [f"--config.{k}={v}" for k, v in run.overrides.items()]
    return " ".join(shlex.quote(p) for p in parts)


def collect_pretraining(runs: list[Run], workdir: Path) -> list[dict[str, Any]]:
    """One row per finished pretraining run: its overrides and final held-out metrics; the score is
    the held-out MLM accuracy."""
    rows = []
    for run in runs:
        final_file = workdir / run.name / PRETRAIN.finished_file
        if not final_file.is_file():
            continue
        final = json.loads(final_file.read_text())
        row: dict[str, Any] = {"run": run.name, "setting": run.setting, **run.overrides}
        row.update({f"eval_{k}": v for k, v in final.items()})
        row["dev_score"] = final["mlm_accuracy"]
        rows.append(row)
    return rows


def collect(runs: list[Run], workdir: Path) -> list[dict[str, Any]]:
    """One row per finished run: its overrides, best epoch, dev metrics and test metrics."""
    rows = []
    for run in runs:
        results_file = workdir / run.name / "results.json"
        if not results_file.is_file():
            continue
        results = json.loads(results_file.read_text())
        best, main = results["best"], results["main_split"]
        row: dict[str, Any] = {"run": run.name, "setting": run.setting, **run.overrides, "best_epoch": best["epoch"]}
        for split, values in best.items():
            if isinstance(values, dict):
                row.update({f"{split}_{k}": v for k, v in values.items()})
        for split, values in results.get("test", {}).items():
            row.update({f"{split}_{k}": v for k, v in values.items()})
        row["dev_score"] = best[main]["score"]
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting: mean and std (over seeds) of the dev score; sorted best first."""
    settings: dict[str, list[float]] = {}
    for row in rows:
        settings.setdefault(row["setting"], []).append(row["dev_score"])
    summary = [
        {"setting": s, "runs": len(v), "dev_score_mean": float(np.mean(v)), "dev_score_std": float(np.std(v))}
        for s, v in settings.items()
    ]
    return sorted(summary, key=lambda r: -r["dev_score_mean"])


def write_tables(
    rows: list[dict[str, Any]], workdir: Path, title: str, score: str = FINETUNE.score
) -> tuple[Path, Path]:
    """sweep_results.csv (every run) and sweep_results.md (per setting, best first, then every run)."""
    csv_path, md_path = workdir / "sweep_results.csv", workdir / "sweep_results.md"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    lines = [f"# {title}", "", f"{len(rows)} finished runs; dev score = {score}.", ""]
    lines += ["| setting | runs | dev score mean | std |", "|---|---|---|---|"]
    for i, s in enumerate(summary):
        mark = " **(best)**" if i == 0 else ""
        lines.append(f"| {s['setting']}{mark} | {s['runs']} | {s['dev_score_mean']:.4f} | {s['dev_score_std']:.4f} |")
    metric_columns = [c for c in columns if c not in ("run", "setting") and isinstance(rows[0].get(c), float)]
    lines += ["", "| run | " + " | ".join(metric_columns) + " |", "|---" * (len(metric_columns) + 1) + "|"]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in metric_columns]
        lines.append(f"| {row['run']} | " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def main(argv: list[str]) -> None:
    del argv
    from bertjax.training import finetuning, pretraining

    base = cli.config_value(_CONFIG)  # the config file loads (or fails with one line) first
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    config_arg = sys_config_arg() or config_file
    runs = expand(load_sweep(config_file))
    workdir = Path(_WORKDIR.value)
    passed = [a for a in sys.argv[1:] if a.startswith("--config.")]
    kind = kind_of(base)
    if _PRINT_ONLY.value:
        for run in runs:
            print(command_line(run, config_arg, workdir, passed, kind))
        return
    if kind is PRETRAIN:
        build, train, summary = config_lib.from_config_dict, pretraining.pretrain, pretraining.print_summary
    else:
        build, train, summary = config_lib.finetune_config_from_dict, finetuning.finetune, finetuning.print_summary
    configs = [
        build(config_lib.apply_overrides(base, run.overrides)) for run in runs
    ]  # every run checked before any starts
    done = sum((workdir / run.name / kind.finished_file).is_file() for run in runs)
    print(f"sweep of {len(runs)} runs in {workdir}: {done} finished already")
    for index, (run, config) in enumerate(zip(runs, configs), start=1):
        if (workdir / run.name / kind.finished_file).is_file():
            continue
        print(f"[{index}/{len(runs)}] {run.name}")
        results = train(config, workdir / run.name)
        if "stopped_at_step" in results:  # SIGTERM/SIGINT: the run is checkpointed; the sweep stops here
            summary(results, workdir / run.name)
            return
    rows = (collect_pretraining if kind is PRETRAIN else collect)(runs, workdir)
    csv_path, md_path = write_tables(rows, workdir, f"Sweep {config_arg}", kind.score)
    best = summarise(rows)[0]
    print(f"best setting {best['setting']}: dev score {best['dev_score_mean']:.4f} ± {best['dev_score_std']:.4f}")
    print(f"tables: {csv_path}, {md_path}")


def sys_config_arg() -> str | None:
    """The --config value as given on the command line (file and argument)."""
    for i, arg in enumerate(sys.argv[1:], start=1):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return None


def run() -> None:
    """The console script's entry point (`pip install` puts it on the PATH)."""
    cli.run(main)


if __name__ == "__main__":
    run()
