"""What a run shows and leaves: progress bar, TensorBoard events, metrics.jsonl, config, plot.

Only process 0 writes (`enabled=False` elsewhere).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import tqdm

# Dense (no sparsity) datasheet rates in TFLOP/s per chip by jax device_kind and compute dtype:
# the MFU's denominator. NVIDIA's H100 SXM / H200 (989.4 bf16, 66.9 fp32) and A100 (312 / 19.5)
# datasheets; Google's per-chip bf16 peaks for TPU v4, v5e ("v5 lite"), v5p and v6e ("v6 lite").
# The H100's device_kind is as jax reports it on that chip; the others are as their makers name them.
DATASHEET_TFLOPS: dict[tuple[str, str], float] = {
    ("NVIDIA H100 80GB HBM3", "bfloat16"): 989.4,
    ("NVIDIA H100 80GB HBM3", "float32"): 66.9,
    ("NVIDIA H200", "bfloat16"): 989.4,
    ("NVIDIA H200", "float32"): 66.9,
    ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312.0,
    ("NVIDIA A100-SXM4-80GB", "float32"): 19.5,
    ("TPU v4", "bfloat16"): 275.0,
    ("TPU v5 lite", "bfloat16"): 197.0,
    ("TPU v5", "bfloat16"): 459.0,
    ("TPU v5p", "bfloat16"): 459.0,
    ("TPU v6 lite", "bfloat16"): 918.0,
}


def throughput(
    flops_per_sequence: float, seq_per_second: float, devices: int, peak_tflops: float | None
) -> dict[str, float]:
    """Useful TFLOP/s per device, and their share of the datasheet rate (the MFU) when it is known."""
    tflops = flops_per_sequence * seq_per_second / devices / 1e12
    return {"tflops_per_device": tflops} | ({"mfu": tflops / peak_tflops} if peak_tflops else {})


PRETRAINING_PANELS = (
    ("loss", "loss (the objective's)"),
    ("mlm_accuracy", "MLM accuracy"),
    ("nsp_accuracy", "NSP accuracy"),
    ("sop_accuracy", "SOP accuracy"),
    ("rtd_accuracy", "replaced-token accuracy (ELECTRA)"),
)


def progress_bar(first_step: int, total_steps: int, enabled: bool) -> tqdm.tqdm:
    """A step progress bar (rate and ETA included); metrics go in its postfix."""
    return tqdm.tqdm(
        total=total_steps, initial=first_step, unit="step", disable=not enabled, dynamic_ncols=True, mininterval=1.0
    )


def _tensorboard_writer() -> type:
    """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch whenever it is
    installed (to accept torch tensors; bertjax writes floats), which costs every run ~2 s and
    ~300 MB. A torch that is already imported is left as it is."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class Writer:
    """TensorBoard scalars plus a metrics.jsonl with one line per (step, split)."""

    def __init__(self, workdir: Path, enabled: bool) -> None:
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._tensorboard = None
        if enabled:
            SummaryWriter = _tensorboard_writer()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))

    def write_config(self, config: dict[str, Any], num_params: int, prepared_dir: Path) -> None:
        record = {"config": config, "num_params": num_params, "prepared_data": str(prepared_dir)}
        (self.workdir / "config.json").write_text(json.dumps(record, indent=2, default=str))
        if self._tensorboard is not None:
            self._tensorboard.add_text("config", f"```\n{json.dumps(config, indent=2, default=str)}\n```", 0)

    def write_scalars(self, step: int, split: str, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        self._tensorboard.flush()
        with (self.workdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")

    def plot_curves(self, panels: tuple[tuple[str, str], ...] = PRETRAINING_PANELS) -> Path | None:
        """curves.png: one panel per (metric, title) that was logged, a line per split."""
        path = self.workdir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return None
        from matplotlib.figure import Figure  # not pyplot: no GUI backend, a second less per run

        series: dict[str, dict[int, dict[str, float]]] = {}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            series.setdefault(record["split"], {})[record["step"]] = record  # a resumed run overwrites
        logged = {key for records in series.values() for r in records.values() for key in r}
        panels = tuple(panel for panel in panels if panel[0] in logged) or panels[:1]
        fig = Figure(figsize=(5 * len(panels), 4), layout="tight")
        axes = fig.subplots(1, len(panels), squeeze=False)
        for ax, (key, title) in zip(axes[0], panels):
            for split, records in series.items():
                points = sorted((step, r[key]) for step, r in records.items() if key in r)
                if points:
                    style = "-" if split == "train" else "o-"
                    ax.plot([s for s, _ in points], [v for _, v in points], style, label=split)
            if key == "mlm_accuracy" and series.get("eval"):
                points = sorted(series["eval"].items())
                ax.plot([s for s, _ in points], [r["unigram_mlm_accuracy"] for _, r in points], "k--", label="unigram")
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        out = self.workdir / "curves.png"
        fig.savefig(out, dpi=100)
        return out

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
