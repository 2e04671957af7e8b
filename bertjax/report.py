"""Reports over finished runs. `glue` gathers a GLUE table from fine-tuning runs.

    python -m bertjax.report glue --runs=runs/glue [--out=runs/glue]

Every `results.json` under `--runs` (sweeps included) is read; per GLUE task the run with the best
dev score is taken (as the BERT paper picks its fine-tuning setting on dev). The table shows the
GLUE leaderboard's columns (CoLA Matthews corr., SST-2 acc., MRPC F1/acc., STS-B Pearson/Spearman,
QQP F1/acc., MNLI-m/mm acc., QNLI, RTE, WNLI acc.) on dev, and the GLUE score: the mean of the task
scores, a two-metric task scoring the mean of its two and MNLI the mean of m and mm. Written as
glue_report.md, glue_report.csv and glue_report.png in `--out`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from bertjax.tasks import glue

COLUMNS: dict[str, list[tuple[str, str, str]]] = {  # task -> (header, split, metric)
    "cola": [("CoLA (MCC)", "dev", "matthews_corrcoef")],
    "sst2": [("SST-2 (acc)", "dev", "accuracy")],
    "mrpc": [("MRPC (F1)", "dev", "f1"), ("MRPC (acc)", "dev", "accuracy")],
    "stsb": [("STS-B (Pearson)", "dev", "pearson"), ("STS-B (Spearman)", "dev", "spearman")],
    "qqp": [("QQP (F1)", "dev", "f1"), ("QQP (acc)", "dev", "accuracy")],
    "mnli": [("MNLI-m (acc)", "dev_matched", "accuracy"), ("MNLI-mm (acc)", "dev_mismatched", "accuracy")],
    "qnli": [("QNLI (acc)", "dev", "accuracy")],
    "rte": [("RTE (acc)", "dev", "accuracy")],
    "wnli": [("WNLI (acc)", "dev", "accuracy")],
}


def find_runs(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p.parent, json.loads(p.read_text())) for p in sorted(root.rglob("results.json"))]


def task_score(task: str, best: dict[str, Any]) -> float:
    """The GLUE score of one task from a run's best-epoch record (MNLI: mean of m and mm)."""
    if task == "mnli":
        return (best["dev_matched"]["score"] + best["dev_mismatched"]["score"]) / 2
    return best["dev"]["score"]


def best_runs(runs: list[tuple[Path, dict[str, Any]]]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Per GLUE task, the finished run with the highest dev score."""
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, results in runs:
        task = results.get("task")
        if task not in glue.TASKS:
            continue
        if task not in chosen or task_score(task, results["best"]) > task_score(task, chosen[task][1]["best"]):
            chosen[task] = (path, results)
    return chosen


def glue_table(chosen: dict[str, tuple[Path, dict[str, Any]]]) -> tuple[list[str], list[str], dict[str, float]]:
    """(headers, cells, task scores) of the one-row GLUE table, values x 100."""
    headers, cells, scores = [], [], {}
    for task, columns in COLUMNS.items():
        for header, split, metric in columns:
            headers.append(header)
            if task in chosen:
                cells.append(f"{100 * chosen[task][1]['best'][split][metric]:.1f}")
            else:
                cells.append("–")
        if task in chosen:
            scores[task] = task_score(task, chosen[task][1]["best"])
    headers.append("GLUE score")
    complete = len(scores) == len(glue.TASKS)
    average = 100 * glue.glue_score(scores) if scores else float("nan")
    cells.append(f"{average:.1f}" if complete else f"{average:.1f} ({len(scores)}/9 tasks)" if scores else "–")
    return headers, cells, scores


def plot(scores: dict[str, float], path: Path) -> None:
    from matplotlib.figure import Figure

    names = [glue.DISPLAY_NAMES[t] for t in scores]
    values = [100 * v for v in scores.values()]
    fig = Figure(figsize=(max(4, 1.1 * len(names) + 1), 4), layout="tight")
    ax = fig.subplots()
    bars = ax.bar(names, values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f")
    ax.axhline(100 * glue.glue_score(scores), color="k", linestyle="--", label="mean")
    ax.set_ylabel("dev score (x100)")
    ax.set_title("GLUE dev scores (best run per task)")
    ax.legend()
    fig.savefig(path, dpi=100)


def glue_report(runs_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Writes glue_report.{md,csv,png}; returns {'headers', 'cells', 'scores', 'runs'}."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    chosen = best_runs(find_runs(runs_dir))
    if not chosen:
        raise FileNotFoundError(f"no finished GLUE run (results.json) under {runs_dir}")
    headers, cells, scores = glue_table(chosen)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# GLUE (dev)", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |", "", "Runs:", ""]
    lines += [
        f"- {glue.DISPLAY_NAMES[t]}: `{path}` (best epoch {r['best']['epoch']})" for t, (path, r) in chosen.items()
    ]
    (out_dir / "glue_report.md").write_text("\n".join(lines) + "\n")
    with (out_dir / "glue_report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerow(cells)
    plot(scores, out_dir / "glue_report.png")
    return {"headers": headers, "cells": cells, "scores": scores, "runs": {t: str(p) for t, (p, _) in chosen.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bertjax.report", description="Reports over finished runs.")
    sub = parser.add_subparsers(dest="report", required=True)
    glue_parser = sub.add_parser("glue", help="a GLUE table (and chart) from fine-tuning runs")
    glue_parser.add_argument("--runs", required=True, help="directory searched for results.json files")
    glue_parser.add_argument("--out", default="", help="where the report goes (default: --runs)")
    args = parser.parse_args(argv)
    try:
        report = glue_report(args.runs, args.out or args.runs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for header, cell in zip(report["headers"], report["cells"]):
        print(f"{header:18s} {cell}")
    print(f"report: {Path(args.out or args.runs) / 'glue_report.md'}")


if __name__ == "__main__":
    main()
