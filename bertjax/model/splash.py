"""Splash attention (`model.attention="splash"`): the TPU Pallas kernel that skips masked blocks.

jax's splash attention kernel takes segment ids rather than a [query, key] mask, so packed rows,
padding and sliding windows cost only the blocks they keep: a block of keys no query of the block
may see is never computed. It runs compiled on a TPU and, anywhere else, through Pallas's
interpreter (exact, slow: for tests on the CPU). The kernel wants rows a multiple of 128 long; a
shorter row is padded with segment 0 (padding, which no real token sees) and cut back after.

Under a mesh the kernel runs per device through `jax.shard_map` (a Pallas call is not split by
the partitioner): the batch over the mesh axes of `activation_batch`, the heads over those of
`activation_heads`, every device computing whole rows of its own heads.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

Array = jax.Array
LANES = 128  # the kernel's block sizes are multiples of this


def _block(length: int) -> int:
    """The largest of 512, 256 and 128 that divides `length` (a multiple of 128)."""
    return next(b for b in (512, 256, LANES) if length % b == 0)


def _kernel(length: int, heads: int, window: int, interpret: bool) -> kernel_lib.SplashAttentionKernel:
    """The kernel for rows of `length` tokens: every key, or (window > 0) the keys within
    window // 2 tokens on either side; segment ids are given at each call. Made anew in each
    trace (it holds arrays of its block masks)."""
    shape = (length, length)
    if window:
        mask: mask_lib.Mask = mask_lib.LocalMask(shape, (window // 2, window // 2), offset=0)
    else:
        mask = mask_lib.FullMask(shape)
    block = _block(length)
    sizes = kernel_lib.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return kernel_lib.make_splash_mha(
        mask_lib.MultiHeadMask([mask] * heads), block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
    )


def splash_attention(
    query: Array, key: Array, value: Array, segments: Array, local: Array | bool, window: int
) -> Array:
    """Softmax attention of [batch, length, heads, head_dim] operands within each segment of
    `segments` [batch, length] (0 = padding); with `local` (a bool, or a traced one inside a scan)
    and `window` > 0, only the keys within window // 2 tokens either side."""
    batch, length, heads, head_dim = query.shape
    padded = -(-length // LANES) * LANES
    interpret = jax.default_backend() != "tpu"

    def rows(q: Array, k: Array, v: Array, s: Array, local: Array) -> Array:
        """[batch, heads, padded, head_dim] outputs of this device's rows and heads."""

        def run(kernel: kernel_lib.SplashAttentionKernel) -> Array:
            one = lambda q, k, v, s: kernel(q, k, v, segment_ids=kernel_lib.SegmentIds(q=s, kv=s))  # noqa: E731
            return jax.vmap(one)(q, k, v, s)

        full = _kernel(padded, q.shape[1], 0, interpret)
        if not window:
            return run(full)
        near = _kernel(padded, q.shape[1], window, interpret)
        return jax.lax.cond(local, lambda: run(near), lambda: run(full))

    grow = ((0, 0), (0, padded - length), (0, 0), (0, 0))
    q, k, v = (jnp.pad(t, grow).transpose(0, 2, 1, 3) for t in (query, key, value))
    q = q / jnp.asarray(math.sqrt(head_dim), q.dtype)
    s = jnp.pad(segments.astype(jnp.int32), ((0, 0), (0, padded - length)))
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        batch_axes, heads_axes = nn.logical_to_mesh_axes(("activation_batch", "activation_heads"))
        spec = jax.sharding.PartitionSpec(batch_axes, heads_axes, None, None)
        rows = jax.shard_map(
            rows,
            in_specs=(spec, spec, spec, jax.sharding.PartitionSpec(batch_axes, None), jax.sharding.PartitionSpec()),
            out_specs=spec,
            check_vma=False,
        )
    return rows(q, k, v, s, jnp.asarray(local, bool)).transpose(0, 2, 1, 3)[:, :length]
