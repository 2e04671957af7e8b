"""A/B of speed levers for bertjax's pretraining step, in one process, alternating rounds of steps so
that drift (clocks, temperature, neighbours) hits every variant alike. Written for a lent GPU, after
benchmarks/bench_gpu.sh; it runs on the CPU too (use a small row).

    python -m benchmarks.gpu_levers [--row=base-256-128] [--dtype=bfloat16] [--rounds=5] [--steps=5]
                                      [--variants=einsum,cudnn,einsum+f32-dots,cudnn+nodrop,einsum+scan]
                                      [--profile=2] [--out=levers.json] [--deadline=SECONDS]

Variants (docs/performance.md, "On one NVIDIA H100"):
  einsum          the default: einsum attention with attention dropout; on a GPU every matmul is
                  XLA's own dot in the compute dtype (bf16 outputs; `ops.einsum`)
  xla, cudnn      model.attention = xla / cudnn (jax.nn.dot_product_attention; no attention dropout)
  <a>+f32-dots    attention <a>, and every matmul in `ops.einsum`'s CPU form (bf16 operands,
                  float32 outputs by its custom VJP, cast after), slower than bf16 outputs on an H100
  ...+nodrop      no dropout at all (hidden and attention): what the dropout masks cost, a bound
                  and not a lever (BERT trains with dropout)
  ...+scan        model.scan_layers: the encoder layers as one scan (compiled once)
Prints each variant's median step, seq/s, useful TFLOP/s and its ratio to the first variant; with
--profile, traces the fastest variant and prints its device time by kind of op and its top ops.
With --deadline, variants whose compilation would likely end past it are skipped (the ones
compiled are still timed), and the JSON is written after every stage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import jax

from benchmarks import bench
from bertjax.config import ATTENTION_IMPLEMENTATIONS
from bertjax.model import ops

LEVERS = ("f32-dots", "nodrop", "scan")


@contextlib.contextmanager
def float32_dots(enabled: bool) -> Iterator[None]:
    """While tracing: `ops.einsum` in its CPU form (float32 outputs) on any backend."""
    original = ops.native_low_precision_dots
    if enabled:
        ops.native_low_precision_dots = lambda: False
    try:
        yield
    finally:
        ops.native_low_precision_dots = original


@contextlib.contextmanager
def model_changed(**fields: Any) -> Iterator[None]:
    """While building the step: the bench's model config with `fields` replaced."""
    original = bench.bench_model_config

    def changed(size: str, dtype: str, attention: str) -> Any:
        return dataclasses.replace(original(size, dtype, attention), **fields)

    bench.bench_model_config = changed
    try:
        yield
    finally:
        bench.bench_model_config = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", default="base-256-128")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--variants", default="einsum,cudnn,einsum+f32-dots,cudnn+nodrop,einsum+scan")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--profile", type=int, default=0, help="trace this many steps of the fastest variant")
    parser.add_argument("--out", default="", help="write the medians (and the profile) there as JSON")
    parser.add_argument("--deadline", type=float, default=0, help="seconds from the start to finish within")
    args = parser.parse_args()
    began = time.perf_counter()
    for variant in args.variants.split(","):
        attention, *levers = variant.split("+")
        if attention not in ATTENTION_IMPLEMENTATIONS or not set(levers) <= set(LEVERS):
            parser.error(
                f"--variants: {variant!r} is not an attention ({', '.join(ATTENTION_IMPLEMENTATIONS)}) "
                f"followed by +levers ({', '.join(LEVERS)})"
            )
    size, batch, length = bench.parse_row(args.row)
    device = jax.devices()[0].device_kind
    print(f"{args.row} {args.dtype} on {device}", flush=True)
    report: dict[str, Any] = {"row": args.row, "dtype": args.dtype, "device": device, "compile_seconds": {}}

    def write() -> None:
        if args.out:
            with open(args.out, "w") as file:
                json.dump(report, file, indent=2)

    steps = {}
    for variant in args.variants.split(","):
        longest = max(report["compile_seconds"].values(), default=0.0)
        if steps and args.deadline and time.perf_counter() - began + 2 * longest + 30 > args.deadline:
            print(f"{variant}: skipped, too close to the deadline", flush=True)
            continue
        attention, *levers = variant.split("+")
        changes: dict[str, Any] = {"scan_layers": True} if "scan" in levers else {}
        if "nodrop" in levers:
            changes |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        with float32_dots("f32-dots" in levers), model_changed(**changes):
            steps[variant] = bench.bertjax_step(size, batch, length, "pretrain", args.dtype, attention)
        metrics = steps[variant].run()
        report["compile_seconds"][variant] = steps[variant].compile_seconds
        print(f"{variant}: compiled in {steps[variant].compile_seconds:.1f} s, first loss {float(metrics['loss']):.4f}")
        write()

    times: dict[str, list[float]] = {variant: [] for variant in steps}
    for step in steps.values():  # warm-up
        step.run()
    for _ in range(args.rounds):
        for variant, step in steps.items():
            times[variant] += bench.timed(step.run, args.steps, warmup=0)

    flops = bench.useful_flops(size, batch, length, "pretrain")
    first = None
    medians = {variant: statistics.median(measured) for variant, measured in times.items()}
    print("| variant | median step (s) | spread (s) | seq/s | useful TFLOP/s | vs first |")
    print("|---|---|---|---|---|---|")
    for variant, measured in times.items():
        median = statistics.median(measured)
        first = first or median
        print(
            f"| {variant} | {median:.4f} | {min(measured):.4f}-{max(measured):.4f} | {batch / median:.1f} | "
            f"{flops / median / 1e12:.1f} | {first / median:.3f}x |"
        )
    report["median_step_seconds"] = medians
    write()
    if args.profile:
        fastest = min(medians, key=medians.__getitem__)
        profile = bench.profile_step(steps[fastest].run, args.profile, steps[fastest].compiled.as_text())
        kinds = ", ".join(f"{kind} {ms:.2f}" for kind, ms in profile["by_kind"].items())
        print(f"{fastest}: ops {profile['ms']:.2f} ms a step, step {medians[fastest] * 1e3:.2f} ms ({kinds})")
        for op in profile["ops"][:12]:
            print(
                f"  {op['ms']:8.3f} ms {op['share']:6.1%} {op['kind'][:9]:9s} {op['op'][:36]:36s} {op['source'][-70:]}"
            )
        report["profile"] = {"variant": fastest, **profile}
        write()


if __name__ == "__main__":
    main()
