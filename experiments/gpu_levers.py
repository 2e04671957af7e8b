"""A/B of speed levers for bertjax's pretraining step, in one process, alternating rounds of steps so
that drift (clocks, temperature, neighbours) hits every variant alike. Written for a lent GPU, after
experiments/bench_gpu.sh; it runs on the CPU too (use a small row).

    python3 experiments/gpu_levers.py [--row=base-256-128] [--dtype=bfloat16] [--rounds=5] [--steps=5]
                                      [--variants=einsum,cudnn,cudnn+bf16-dots]

Variants (README, "On one NVIDIA H100", and DESIGN.md, "Speed on a GPU"):
  einsum          the default: einsum attention with attention dropout; every matmul through
                  `model.einsum` (bf16 operands, float32 outputs by its custom VJP, cast after)
  xla, cudnn      model.attention = xla / cudnn (jax.nn.dot_product_attention; no attention dropout)
  <a>+bf16-dots   attention <a>, and every matmul as XLA's own dot in the compute dtype (bf16 outputs;
                  cuBLAS and TPUs accumulate bf16 products in float32 themselves). On a CPU this
                  is the slow path that `model.einsum` exists to avoid.
Prints each variant's median step, seq/s, useful TFLOP/s and its ratio to the first variant.
"""

from __future__ import annotations

import argparse
import contextlib
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", default="base-256-128")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--variants", default="einsum,cudnn,cudnn+bf16-dots")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    args = parser.parse_args()
    size, batch, length = bench.parse_row(args.row)
    print(f"{args.row} {args.dtype} on {jax.devices()[0].device_kind}", flush=True)

    steps = {}
    for variant in args.variants.split(","):
        attention, _, dots = variant.partition("+")
        with bf16_dots(dots == "bf16-dots"):
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
    print("| variant | median step (s) | spread (s) | seq/s | useful TFLOP/s | vs first |")
    print("|---|---|---|---|---|---|")
    for variant, measured in times.items():
        median = statistics.median(measured)
        first = first or median
        print(
            f"| {variant} | {median:.4f} | {min(measured):.4f}-{max(measured):.4f} | {batch / median:.1f} | "
            f"{flops / median / 1e12:.1f} | {first / median:.3f}x |"
        )


if __name__ == "__main__":
    main()
