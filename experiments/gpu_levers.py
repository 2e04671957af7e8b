"""A/B of speed levers for bertjax's pretraining step, in one process, alternating rounds of steps so
that drift (clocks, temperature, neighbours) hits every variant alike. Written for a lent GPU, after
experiments/bench_gpu.sh; it runs on the CPU too (use a small row).

    python3 experiments/gpu_levers.py [--row=base-256-128] [--dtype=bfloat16] [--rounds=5] [--steps=5]
                                      [--variants=einsum,cudnn,einsum+bf16-dots,cudnn+bf16-dots]
                                      [--profile=2] [--out=levers.json]

Variants (README, "On one NVIDIA H100", and DESIGN.md, "Speed on a GPU"):
  einsum          the default: einsum attention with attention dropout; every matmul through
                  `model.einsum` (bf16 operands, float32 outputs by its custom VJP, cast after)
  xla, cudnn      model.attention = xla / cudnn (jax.nn.dot_product_attention; no attention dropout)
  <a>+bf16-dots   attention <a>, and every matmul as XLA's own dot in the compute dtype (bf16 outputs,
                  and so the biases added in bf16; cuBLAS and TPUs accumulate bf16 products in
                  float32 themselves). On a CPU this is the slow path that `model.einsum` avoids.
  ...+nodrop      no dropout at all (hidden and attention): what the dropout masks cost, a bound
                  and not a lever (BERT trains with dropout)
Prints each variant's median step, seq/s, useful TFLOP/s and its ratio to the first variant; with
--profile, traces the fastest variant and prints its device time by kind of op and its top ops.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from bertjax import bench, model


@contextlib.contextmanager
def bf16_dots(enabled: bool) -> Iterator[None]:
    """While tracing: `model.einsum` as a plain jnp.einsum in the compute dtype."""
    original = model.einsum

    def plain(spec: str, x: jax.Array, w: jax.Array, dtype: Any) -> jax.Array:
        return jnp.einsum(spec, x.astype(dtype), w.astype(dtype))

    if enabled:
        model.einsum = plain
    try:
        yield
    finally:
        model.einsum = original


@contextlib.contextmanager
def no_dropout(enabled: bool) -> Iterator[None]:
    """While building the step: the bench's model config with every dropout rate at 0."""
    original = bench.bench_model_config

    def without(size: str, dtype: str, attention: str) -> Any:
        config = original(size, dtype, attention)
        return dataclasses.replace(config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    if enabled:
        bench.bench_model_config = without
    try:
        yield
    finally:
        bench.bench_model_config = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", default="base-256-128")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--variants", default="einsum,cudnn,einsum+bf16-dots,cudnn+bf16-dots,cudnn+bf16-dots+nodrop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--profile", type=int, default=0, help="trace this many steps of the fastest variant")
    parser.add_argument("--out", default="", help="write the medians (and the profile) there as JSON")
    args = parser.parse_args()
    size, batch, length = bench.parse_row(args.row)
    print(f"{args.row} {args.dtype} on {jax.devices()[0].device_kind}", flush=True)

    steps = {}
    for variant in args.variants.split(","):
        attention, *levers = variant.split("+")
        with bf16_dots("bf16-dots" in levers), no_dropout("nodrop" in levers):
            steps[variant] = bench.bertjax_step(size, batch, length, "pretrain", args.dtype, attention)
        metrics = steps[variant].run()
        print(f"{variant}: compiled in {steps[variant].compile_seconds:.1f} s, first loss {float(metrics['loss']):.4f}")

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
    report: dict[str, Any] = {"row": args.row, "dtype": args.dtype, "device": jax.devices()[0].device_kind}
    report["median_step_seconds"] = medians
    if args.profile:
        fastest = min(medians, key=medians.__getitem__)
        profile = bench._profile(steps[fastest].run, args.profile, steps[fastest].compiled.as_text())
        kinds = ", ".join(f"{kind} {ms:.2f}" for kind, ms in profile["by_kind"].items())
        print(f"{fastest}: ops {profile['ms']:.2f} ms a step, step {medians[fastest] * 1e3:.2f} ms ({kinds})")
        for op in profile["ops"][:12]:
            print(
                f"  {op['ms']:8.3f} ms {op['share']:6.1%} {op['kind'][:9]:9s} {op['op'][:36]:36s} {op['source'][-70:]}"
            )
        report["profile"] = {"variant": fastest, **profile}
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
