"""Low-level operations of the model: the exact GELU, the mixed-precision einsum, and dropout from a
keyed hash (cheap random bits that shard like the activation they mask).

Measurements behind the choices here are in docs/performance.md.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def gelu(x: Array) -> Array:
    """BERT's exact GELU, x * Phi(x), in the erf form of google-research/bert and Hugging Face.

    jax.nn.gelu(approximate=False) computes it through erfc, exact far into the negative tail
    but at twice the cost on a CPU; the two differ by about 1e-6 absolute.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


def activation(name: str) -> Any:
    """The feed-forward non-linearity; "gelu" is the exact erf form, as in BERT."""
    return {
        "gelu": gelu,
        "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
        "tanh": jnp.tanh,
    }[name]


def einsum(spec: str, x: Array, w: Array, dtype: Any) -> Array:
    """`jnp.einsum(spec, x, w)` with both operands in `dtype`: a float32 result on a CPU, a `dtype`
    result on GPUs and TPUs.

    On GPUs and TPUs this is XLA's own einsum in `dtype`: their matrix units accumulate bf16
    products in float32 and round the result to bf16, in the forward pass and in both backward
    matmuls (as flax's Dense in bf16 and MaxText do): float32 results would double the bytes that
    the elementwise kernels after each matmul read and write (docs/performance.md).

    On a CPU a weight's einsum has a VJP of its own. In float32 its weight gradient is one 2-D
    matmul that contracts the leading (token) axis of both operands, which XLA:CPU runs as an Eigen
    dot on the operands as they lie; the transpose XLA derives itself goes to YNNPACK behind a
    transposed copy of one operand (or a transposed rerun of the fusion that made it), about 13%
    of a MiniLM train step. Below float32 the products accumulate in float32 in the forward pass
    and in both backward matmuls, whose incoming gradient is cast to `dtype` (as under torch
    autocast): XLA's own transpose of a bf16 einsum would give bf16 x bf16 -> bf16 matmuls, which
    the CPU backend upcasts to float32. Batched (attention) products are plain float32 einsums on
    a CPU.
    `spec` is a two-operand einsum with an explicit output in which every index of one
    operand appears in the other or in the output, so both gradients are einsums of the same kind;
    a leading `...` on `x` and the output stands for x's leading axes.
    """
    if "..." in spec:
        x_spec = _specs(spec)[0]
        spec = spec.replace("...", "ABCDEFG"[: x.ndim - len(x_spec) + 3])
    dtype = jnp.dtype(dtype)
    if native_low_precision_dots():
        return jnp.einsum(spec, x.astype(dtype), w.astype(dtype))
    if _batched(spec):
        # XLA:CPU's bf16 x bf16 -> f32 kernels for the batched (attention) products are no faster
        # over a whole step, and those with a transposed operand in the backward pass are slower
        # (docs/performance.md).
        return jnp.einsum(spec, x.astype(jnp.float32), w.astype(jnp.float32))
    return _cpu_einsum(spec, x.astype(dtype), w.astype(dtype))


def native_low_precision_dots() -> bool:
    """Whether `einsum` is XLA's own (GPUs, TPUs) rather than the CPU's form with its own VJP."""
    return jax.default_backend() != "cpu"


def _specs(spec: str) -> tuple[str, str, str]:
    """'xs,ws->out' -> (xs, ws, out)."""
    operands, out = spec.split("->")
    x_spec, w_spec = operands.split(",")
    return x_spec, w_spec, out


def _batched(spec: str) -> bool:
    x_spec, w_spec, out = _specs(spec)
    return bool(set(x_spec) & set(w_spec) & set(out))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cpu_einsum(spec: str, x: Array, w: Array) -> Array:
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)


def _cpu_einsum_fwd(spec: str, x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return _cpu_einsum(spec, x, w), (x, w)


def _cpu_einsum_bwd(spec: str, residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    x, w = residuals
    x_spec, w_spec, out = _specs(spec)
    grad = grad.astype(x.dtype)
    dx = jnp.einsum(f"{out},{w_spec}->{x_spec}", grad, w, preferred_element_type=jnp.float32)
    if x.dtype == jnp.float32:
        dw = _weight_gradient(spec, x, grad)
    else:  # YNNPACK's bf16 kernels, behind the transposed copy, beat Eigen's bf16 dot
        dw = jnp.einsum(f"{x_spec},{out}->{w_spec}", x, grad, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_cpu_einsum.defvjp(_cpu_einsum_fwd, _cpu_einsum_bwd)


def _weight_gradient(spec: str, x: Array, grad: Array) -> Array:
    """The gradient of `w` in `einsum(spec, x, w)`: x's and the output gradient's summed axes
    flattened into one leading axis, then a matmul contracting that axis of both (a weight's
    layout of [x's axes, the output's axes] or the reverse, a transpose otherwise)."""
    x_spec, w_spec, out = _specs(spec)
    summed = [a for a in x_spec if a not in w_spec]
    x_kept = [a for a in x_spec if a in w_spec]
    g_kept = [a for a in out if a in w_spec]
    sizes = dict(zip(x_spec, x.shape)) | dict(zip(out, grad.shape))
    x2 = jnp.transpose(x, [x_spec.index(a) for a in summed + x_kept]).reshape(-1, math.prod(sizes[a] for a in x_kept))
    g2 = jnp.transpose(grad, [out.index(a) for a in summed + g_kept]).reshape(-1, math.prod(sizes[a] for a in g_kept))

    def contract(a: Array, b: Array) -> Array:
        return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    if "".join(g_kept + x_kept) == w_spec:
        return contract(g2, x2).reshape([sizes[a] for a in w_spec])
    dw = contract(x2, g2).reshape([sizes[a] for a in x_kept + g_kept])
    return jnp.transpose(dw, [(x_kept + g_kept).index(a) for a in w_spec])


def _mix32(x: Array) -> Array:
    """A bijection of uint32 with near-ideal avalanche: "lowbias32" from C. Wellons' hash-prospector
    (two xorshift-multiply rounds; flipping one input bit flips each output bit with probability ~1/2)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def random_words(rng: Array, shape: tuple[int, ...]) -> Array:
    """uint32 random words of `shape`: a keyed hash of each word's position, with two keys taken
    from `rng`'s own words.

    word = mix(mix(position-in-row XOR row key) + k1), row key = mix(row XOR k0), rows being the
    leading axis. Cheap (a few integer ops per word, about 12x less than threefry on a CPU, where
    threefry's dropout bits took a sixth of a BERT-base step at length 512); a pure function of the
    position, so the words are the same however the array is sharded; different keys give unrelated
    words, not shifted copies (the keys enter between the two mixing rounds). k0 and k1 are `rng`'s
    key data (already the output of the PRNG that made `rng`: flax's `make_rng`), mixed, rather
    than drawn with another threefry call: on XLA:CPU that is a loop of its own at every dropout
    site, 0.3 s of the 1.8 s a MiniLM SQuAD gradient takes to compile.
    """
    if len(shape) < 2:
        return random_words(rng, (1, *shape) if shape else (1, 1)).reshape(shape)
    data = jax.random.key_data(rng).reshape(-1).astype(jnp.uint32)
    k0 = _mix32(data[0] ^ jnp.uint32(0x9E3779B9))
    k1 = _mix32(data[-1] ^ k0)
    if math.prod(shape[1:]) >= 2**32:
        raise ValueError(f"random_words: {math.prod(shape[1:])} words per row, more than 2**32")
    rows = jax.lax.broadcasted_iota(jnp.uint32, shape, 0)
    position = jnp.zeros(shape, jnp.uint32)
    for axis in range(1, len(shape)):
        stride = math.prod(shape[axis + 1 :])
        position = position + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    return _mix32(_mix32(position ^ _mix32(rows ^ k0)) + k1)


def keep_mask(rng: Array, rate: float, shape: tuple[int, ...]) -> Array:
    """Dropout's keep mask: True with probability 1 - rate, from 16 random bits per element.

    Each 32-bit word of `random_words` decides two neighbouring elements. The rate is rounded to a
    multiple of 1/65536. The words keep the array's leading axes, so the mask shards like the
    activation.
    """
    threshold = round(rate * 65536)
    if not shape:
        return keep_mask(rng, rate, (1,)).reshape(())
    last = shape[-1]
    words = random_words(rng, (*shape[:-1], (last + 1) // 2))
    halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(*shape[:-1], 2 * words.shape[-1])
    return halves[..., :last] >= jnp.uint16(threshold)


class Dropout(nn.Module):
    """Inverted dropout (as nn.Dropout) drawing its mask with `keep_mask`."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = keep_mask(self.make_rng("dropout"), self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x)).astype(x.dtype)
