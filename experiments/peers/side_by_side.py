"""A fine-tuning config trained by bertjax and by its torch peer on this machine, side by side.

    make compare-ner   # python experiments/peers/side_by_side.py --config=configs/demo_ner.py --workdir=DIR --group-by-length
    make compare-qa    # python experiments/peers/side_by_side.py --config=configs/demo_qa.py --workdir=DIR

Runs `python -m bertjax.finetune` and then `torch_finetune.py` on the same config, each in its own
process timed from its start to its exit (imports, data and compilation included, as
`/usr/bin/time` measures them), and prints one table: the scores of bertjax's best epoch and of
the peer's same epoch on each eval split, the test splits' scores, both wall times and the
config's published figure. bertjax's run goes to `<workdir>/bertjax`, the peer's results to
`<workdir>/peer.json`; a workdir that exists is refused (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PEER = Path(__file__).with_name("torch_finetune.py")


def timed(name: str, command: list[str]) -> float:
    """Runs `command` (its output shown as it comes); its wall time in seconds."""
    began = time.perf_counter()
    done = subprocess.run(command)
    if done.returncode:
        sys.exit(f"side_by_side: {name} exited with status {done.returncode}")
    return time.perf_counter() - began


def table(ours: dict, peer: dict, walls: tuple[float, float]) -> list[str]:
    """The rows: split, metric, bertjax, peer (metrics both report), then the wall times."""
    best = ours["best"]
    epoch = next((e for e in peer["epochs"] if e["epoch"] == best["epoch"]), peer["epochs"][-1])
    splits = [(name, best[name], epoch.get(name, {})) for name in best if name not in ("epoch", "step")]
    splits += [(name, values, peer["test"].get(name, {})) for name, values in ours["test"].items()]
    lines = [f"{'':24} {'bertjax':>12} {'torch peer':>12}"]
    for name, a, b in splits:
        lines += [f"{name + ' ' + key:24} {a[key]:12.4f} {b[key]:12.4f}" for key in a if key in b]
    lines.append(f"{'wall time (s)':24} {walls[0]:12.1f} {walls[1]:12.1f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a bertjax fine-tuning config file (file.py[:arg])")
    parser.add_argument("--workdir", required=True, help="a new folder for both runs")
    parser.add_argument("--group-by-length", action="store_true", help="the peer's batches grouped by length")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if workdir.exists():
        sys.exit(f"side_by_side: --workdir={workdir} exists: name a new folder (nothing is overwritten)")
    ours = timed(
        "bertjax.finetune",
        [sys.executable, "-m", "bertjax.finetune", f"--config={args.config}", f"--workdir={workdir / 'bertjax'}"],
    )
    theirs = timed(
        PEER.name,
        [sys.executable, str(PEER), f"--config={args.config}", f"--out={workdir / 'peer.json'}"]
        + ["--group-by-length"] * args.group_by_length,
    )
    results = json.loads((workdir / "bertjax" / "results.json").read_text())
    lines = table(results, json.loads((workdir / "peer.json").read_text()), (ours, theirs))
    if results.get("published"):
        lines.append(f"published: {results['published']}")
    print("\n".join(lines))
    (workdir / "side_by_side.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
