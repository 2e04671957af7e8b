"""Every paper recipe at its paper's scale through `python -m bertjax.preflight`: one table.

    python -m experiments.preflight_recipes --out=experiments/results/<date>-preflight

Each recipe is compiled for a TPU slice of about the paper's compute (the papers' V100, A100,
H100 and TPU v3 machines are not TPU topologies jax describes: the slice is named beside each),
with FSDP over the slice as the launch scripts run it, its layers scanned (`model.scan_layers`:
one layer compiled, as one would launch it; XLA then counts one layer's FLOPs and bytes, so the
step-time bound rests on the model's FLOP count), its global batch as the paper's. Writes
preflight.md (recipe, topology, batch, mesh, memory per chip, fits, step-time bound, MFU bound)
and one JSON report per recipe. Needs libtpu (`pip install -e '.[tpu]'`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (name, config, topology, the paper's hardware)
RUNS = (
    ("BERT-base phase 1", "experiments/recipes.py:recipe=bert,size=base,phase=1", "v4-32", "16 Cloud TPU v3 chips"),
    ("BERT-large phase 1", "experiments/recipes.py:recipe=bert,size=large,phase=1", "v4-128", "64 Cloud TPU v3 chips"),
    ("LAMB phase 1 (batch 64k)", "experiments/recipes.py:recipe=lamb,phase=1", "v4-2048", "1024 TPU v3 chips"),
    ("24hBERT", "experiments/recipes.py:recipe=academic", "v5e-8", "8 V100"),
    ("MosaicBERT-base", "experiments/recipes.py:recipe=mosaic", "v5e-8", "8 A100 80GB"),
    ("Cramming", "experiments/recipes.py:recipe=cramming", "v5e-1", "1 A6000"),
    ("RoBERTa-base", "configs/roberta.py:size=base", "v5p-256", "1024 V100"),
    ("ELECTRA-base", "configs/electra.py:size=base", "v4-32", "16 TPU v3 chips"),
    ("ModernBERT-base", "configs/modernbert.py:size=base", "v5p-16", "8 H100"),
    ("NeoBERT", "configs/neobert.py", "v5p-16", "8 H100"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="", help="comma-separated names to run (default: all)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        "| recipe | paper's hardware | topology | global batch | mesh | per chip: state / total (HBM) | fits | step time >= | MFU at most | suggestion |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, config, topology, hardware in RUNS:
        if args.only and name not in args.only.split(","):
            continue
        report_file = out / f"{topology}-{name.replace(' ', '_')}.json"
        command = [
            sys.executable, "-m", "bertjax.preflight", f"--config={config}", f"--topology={topology}",
            "--config.mesh.preset=fsdp", "--config.model.scan_layers=True", f"--json={report_file}", "--suggest",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        (out / f"{topology}-{name.replace(' ', '_')}.log").write_text(result.stdout + result.stderr)
        if not report_file.is_file():
            rows.append(f"| {name} | {hardware} | {topology} | | | | error: {result.stderr.strip()[-200:]} | | | |")
            continue
        r = json.loads(report_file.read_text())
        mesh = " x ".join(f"{axis} {size}" for axis, size in r["mesh"].items() if size > 1) or "1 device"
        state = (r["parameters"] + r["optimizer_state"]) / 2**30
        estimate = r["estimate"]
        suggestion = next(
            (line.split("fits with ", 1)[1] for line in result.stdout.splitlines() if "fits with " in line), ""
        )
        rows.append(
            f"| {name} | {hardware} | {topology} | {r['global_batch']} | {mesh} | {state:.2f} / {r['total'] / 2**30:.2f} "
            f"GiB ({r['hbm'] / 2**30:.0f}) | {'yes' if r['fits'] else 'no'} | {estimate['step_s'] * 1e3:.0f} ms "
            f"| {estimate['mfu_bound']:.0%} | {suggestion} |"
        )
        print(rows[-1], flush=True)
    (out / "preflight.md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
