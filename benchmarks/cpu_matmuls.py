"""GFLOP/s of the matmuls of a BERT-base pretraining step (batch x length tokens), each alone, as
XLA:CPU runs them (jax) and as torch runs them (its BLAS: MKL or oneDNN on x86), on the same
threads (torch's default, as in the bench). Tells whether a gap to the torch peer comes from the
matrix library rather than from bertjax (docs/performance.md). Set XLA_FLAGS before it to compare
XLA:CPU's libraries.

    python -m benchmarks.cpu_matmuls [--tokens=1024] [--dtype=float32] [--repeats=20]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import bench

HIDDEN, INTERMEDIATE, VOCAB, HEAD_DIM = 768, 3072, 30522, 64


def products(tokens: int, masked: int) -> list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]:
    """(name, einsum, x shape, w shape) of the step's products, on operands shaped as in the step
    ([batch, length, features]; at 128 tokens a row): forward, input gradient (dX) and weight
    gradient (dW) of the dense layers and of the tied decoder at the masked positions, and
    attention's batched products. The shapes matter: XLA:CPU runs a bf16 dW that sums over one
    flattened token axis by converting both operands to float32 (about 200-250 GFLOP/s on AMX),
    and the step's form, summed over [batch, length], at 700-1,350."""
    heads = HIDDEN // HEAD_DIM
    batch = tokens // 128
    rows, per_row = (batch, 128), (batch, masked // batch)
    dense = [
        ("attention dense", HIDDEN, HIDDEN),
        ("intermediate", HIDDEN, INTERMEDIATE),
        ("output", INTERMEDIATE, HIDDEN),
    ]
    listed = []
    for name, features_in, features_out in dense:
        listed += [
            (f"{name} fwd", "bli,io->blo", (*rows, features_in), (features_in, features_out)),
            (f"{name} dX", "blo,io->bli", (*rows, features_out), (features_in, features_out)),
            (f"{name} dW", "bli,blo->io", (*rows, features_in), (*rows, features_out)),
        ]
    return listed + [
        ("decoder fwd (masked)", "bpd,vd->bpv", (*per_row, HIDDEN), (VOCAB, HIDDEN)),
        ("decoder dW (masked)", "bpv,bpd->vd", (*per_row, VOCAB), (*per_row, HIDDEN)),
        ("attention scores", "bhqd,bhkd->bhqk", (batch, heads, 128, HEAD_DIM), (batch, heads, 128, HEAD_DIM)),
        ("attention context", "bhqk,bhkd->bhqd", (batch, heads, 128, 128), (batch, heads, 128, HEAD_DIM)),
        ("square 2048", "ij,jk->ik", (2048, 2048), (2048, 2048)),
    ]


def flops(spec: str, x: tuple[int, ...], w: tuple[int, ...]) -> int:
    x_indices, w_indices = spec.split("->")[0].split(",")
    sizes = dict(zip(x_indices, x)) | dict(zip(w_indices, w))
    return 2 * int(np.prod(list(sizes.values())))


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    return statistics.median(bench.timed(run, repeats, warmup=3))


def xla_seconds(spec: str, x: np.ndarray, w: np.ndarray, dtype: str, repeats: int) -> float:
    product = jax.jit(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=jnp.float32))
    a, b = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    return median_seconds(lambda: product(a, b).block_until_ready(), repeats)


def torch_seconds(spec: str, x: np.ndarray, w: np.ndarray, dtype: str, repeats: int) -> float:
    import torch

    a, b = torch.from_numpy(x).to(getattr(torch, dtype)), torch.from_numpy(w).to(getattr(torch, dtype))
    return median_seconds(lambda: torch.einsum(spec, a, b), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024, help="batch x length (1024: the bench's base-8-128)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import torch

    rng = np.random.default_rng(0)
    print(f"{args.dtype}, {torch.get_num_threads()} torch threads, jax {jax.__version__}, torch {torch.__version__}")
    print("| product | shapes | XLA GFLOP/s | torch GFLOP/s |")
    print("|---|---|---|---|")
    for name, spec, x_shape, w_shape in products(args.tokens, args.tokens // 128 * bench.predictions_for(128)):
        x, w = rng.standard_normal(x_shape, np.float32), rng.standard_normal(w_shape, np.float32)
        seconds_xla = xla_seconds(spec, x, w, args.dtype, args.repeats)
        seconds_torch = torch_seconds(spec, x, w, args.dtype, args.repeats)
        work = flops(spec, x_shape, w_shape)
        print(f"| {name} | {x_shape} x {w_shape} | {work / seconds_xla / 1e9:.0f} | {work / seconds_torch / 1e9:.0f} |")


if __name__ == "__main__":
    main()
