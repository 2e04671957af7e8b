"""Every recipe's architecture and objective at one small size, pretrained on the sample news corpus for
the same wall-clock time on this machine, then fine-tuned the same way on Reuters R8.

    python -m experiments.head_to_head --minutes=4 --out=experiments/results/<machine>-<date>-head-to-head

Each recipe keeps what makes it that recipe (its architecture knobs, objective, masking rate and
replacement split, optimizer, betas, weight decay, clipping and schedule shape, with warmups and
cooldowns as shares of the run) at BERT-tiny's shape (2 layers, hidden 128, 2 heads, feed-forward
512, or 344 per half for gated ones), with one batch (32 rows of 128 tokens) and the same time
budget (`train.time_budget_hours`, so every schedule runs its course in the time given). Held-out
MLM accuracy is each recipe's own masking task (ELECTRA's: its generator's), so the downstream
score, R8 test accuracy after one epoch of the same fine-tuning (lr 5e-4, batch 32, 64 tokens),
is the common probe. Writes results.json, results.md (a table) and curves.png (held-out MLM
accuracy against training time, and R8 accuracy per recipe, with the unigram baseline).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_collections

from bertjax import config as config_lib
from bertjax.data import samples

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)
GLU_INTERMEDIATE = 344  # 2/3 of 512, rounded to a multiple of 8: about the MLP's parameters
BATCH, LENGTH = 32, 128
# name: (config file, argument)
RECIPES = {
    "BERT": ("experiments/recipes.py", "recipe=bert"),
    "RoBERTa": ("configs/roberta.py", "size=base"),
    "ELECTRA": ("configs/electra.py", "size=small"),
    "24hBERT": ("experiments/recipes.py", "recipe=academic"),
    "MosaicBERT": ("experiments/recipes.py", "recipe=mosaic"),
    "Cramming": ("experiments/recipes.py", "recipe=cramming"),
    "ModernBERT": ("configs/modernbert.py", "size=base"),
    "NeoBERT": ("configs/neobert.py", ""),
}


def small_config(config_file: str, arg: str, minutes: float, news: Path, vocab: Path) -> ml_collections.ConfigDict:
    """The recipe's config at the common small size, batch and time budget."""
    config = config_lib.load_config_module(ROOT / config_file).get_config(arg)
    model, data, optim, train = config.model, config.data, config.optim, config.train
    schedule_steps = optim.schedule_steps or train.num_train_steps
    if not optim.warmup_fraction:  # warmup as the same share of the (shorter) run
        optim.warmup_fraction = min(optim.warmup_steps / schedule_steps, 0.5)
    optim.warmup_steps, optim.schedule_steps, optim.schedule_offset = 0, 0, 0
    model.size = ""
    model.update(SHAPE)
    if model.mlp_type == "glu":
        model.intermediate_size = GLU_INTERMEDIATE
    if model.embedding_size:
        model.embedding_size = 64  # ELECTRA-small's factorised tables, at half the width as there
    model.vocab_size = 0  # the sample vocab's size
    model.max_position_embeddings = max(LENGTH + model.position_offset, 512)
    if model.local_attention:
        model.local_attention = 32  # ModernBERT's 128-token window, a quarter of the row, as at 512
    data.train_files, data.tfds_name, data.vocab_file = str(news), "", str(vocab)
    data.max_seq_length = LENGTH
    data.max_predictions_per_seq = max(20, round(LENGTH * data.masked_lm_prob))
    data.dupe_factor, data.masking_phases = 1, ""
    config.init, config.init_optimizer, config.init_optimizer_count = "", False, "continue"
    train.batch_size, train.batch_size_phases = BATCH, ""
    train.num_train_steps = 1_000_000  # an upper bound: the budget ends every run
    train.time_budget_hours = minutes / 60
    train.eval_every_steps, train.eval_batches = 200, 20
    train.checkpoint_every_steps, train.log_every_steps = 1_000_000, 100
    return config


def run(command: list[str], log: Path) -> None:
    with log.open("w") as f:
        result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"error: {' '.join(command[:4])} failed: see {log}")


def pretrain(name: str, config: ml_collections.ConfigDict, out: Path) -> Path:
    """Pretrains through the command line (a process of its own), its config written beside it."""
    workdir = out / "runs" / name
    config_file = out / "configs" / f"{name}.py"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(
        "import ml_collections\n\n\ndef get_config(arg=None):\n"
        f"    return ml_collections.ConfigDict({config.to_dict()!r})\n"
    )
    if not (workdir / "final_eval.json").is_file():
        run(
            [sys.executable, "-m", "bertjax.pretrain", f"--config={config_file}", f"--workdir={workdir}"],
            out / f"{name}.pretrain.log",
        )
    return workdir


def finetune(name: str, pretrained: Path, r8: Path, vocab: Path, out: Path) -> dict[str, Any]:
    workdir = out / "runs" / f"{name}-r8"
    if not (workdir / "results.json").is_file():
        command = [
            sys.executable,
            "-m",
            "bertjax.finetune",
            f"--config={ROOT / 'configs' / 'r8.py'}",
            f"--workdir={workdir}",
            f"--config.init={pretrained}",
            f"--config.task.train_file={r8 / 'train.tsv'}",
            f"--config.task.test_file={r8 / 'test.tsv'}",
            f"--config.task.vocab_file={vocab}",
            "--config.optim.learning_rate=5e-4",
            "--config.train.batch_size=32",
            "--config.train.num_epochs=1",
        ]
        run(command, out / f"{name}.r8.log")
    return json.loads((workdir / "results.json").read_text())


def curve(workdir: Path) -> list[tuple[float, float]]:
    """(minutes of training, held-out MLM accuracy) of each evaluation."""
    points = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] == "eval" and "elapsed_seconds" in record:
            points.append((record["elapsed_seconds"] / 60, record["mlm_accuracy"]))
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="pretraining time per recipe")
    parser.add_argument("--out", required=True, help="folder for the runs, results.json, results.md, curves.png")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cache = ROOT / "data" / "cache"
    files = samples.fetch_samples(ROOT / "data" / "samples", cache)
    r8 = samples.fetch_r8(ROOT / "data" / "samples", cache)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    results = previous.get("recipes", {}) if previous.get("minutes") == args.minutes else {}
    for name in args.recipes.split(","):  # a run left in <out>/runs is reused; delete it to run again
        config_file, arg = RECIPES[name]
        config = small_config(config_file, arg, args.minutes, files["news"], files["vocab"])
        print(f"{name}: pretraining for {args.minutes} minutes", flush=True)
        workdir = pretrain(name, config, out)
        final = json.loads((workdir / "final_eval.json").read_text())
        print(f"{name}: fine-tuning on R8", flush=True)
        downstream = finetune(name, workdir, r8, files["vocab"], out)
        checkpoint = sorted((workdir / "checkpoints").iterdir(), key=lambda p: int(p.name))[-1]
        results[name] = {
            "config": f"{config_file}:{arg}",
            "steps": int(checkpoint.name),
            "held_out_mlm_accuracy": final["mlm_accuracy"],
            "unigram_mlm_accuracy": final["unigram_mlm_accuracy"],
            "masked_lm_prob": config.data.masked_lm_prob,
            "objective": config.train.objective,
            "r8_test_accuracy": downstream["test"]["test"]["accuracy"],
            "curve": curve(workdir),
        }
        (out / "results.json").write_text(json.dumps({"minutes": args.minutes, "recipes": results}, indent=2))
    write_report(results, args.minutes, out)


def write_report(results: dict[str, dict[str, Any]], minutes: float, out: Path) -> None:
    lines = [
        f"Pretraining for {minutes} minutes each, then one epoch of R8 fine-tuning; BERT-tiny's shape.",
        "",
        "| recipe | steps | masking | held-out MLM accuracy | unigram baseline | R8 test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results.items(), key=lambda item: -item[1]["r8_test_accuracy"]):
        note = " (generator)" if r["objective"] == "electra" else ""
        lines.append(
            f"| {name} | {r['steps']} | {r['masked_lm_prob']:.0%} | {r['held_out_mlm_accuracy']:.3f}{note} "
            f"| {r['unigram_mlm_accuracy']:.3f} | {100 * r['r8_test_accuracy']:.2f}% |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    left, right = figure.subplots(1, 2)
    for name, r in results.items():
        if r["curve"]:
            left.plot(*zip(*r["curve"], strict=True), label=name)
    baseline = max(r["unigram_mlm_accuracy"] for r in results.values())
    left.axhline(baseline, color="gray", linestyle="--", label="unigram baseline")
    left.set(xlabel="training minutes", ylabel="held-out MLM accuracy (own masking)", title="Pretraining")
    left.legend(fontsize=7)
    names = sorted(results, key=lambda n: -results[n]["r8_test_accuracy"])
    right.barh(names, [100 * results[n]["r8_test_accuracy"] for n in names])
    right.set(xlabel="R8 test accuracy (%)", title="Fine-tuned on R8, one epoch")
    right.set_xlim(left=min(100 * results[n]["r8_test_accuracy"] for n in names) - 5)
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=110)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
