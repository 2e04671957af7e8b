"""BERT in Flax Linen: embeddings, post-LN encoder, pooler, masked-LM and next-sentence heads.

Pure functions of their parameters (Devlin et al. 2018; google-research/bert `modeling.py`).
Every kernel is created with `nn.with_logical_partitioning` and the main activations are
constrained with `nn.with_logical_constraint`, so a mesh and a set of logical-axis rules
(`bertjax.config.MeshConfig`) decide the sharding; the modules never name a device axis.
Parameter names follow Hugging Face's layout closely enough that `bertjax.weights.hf_mapping` maps
one to the other by rule.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.config import ModelConfig
from bertjax.model.ops import Dropout, activation, einsum
from bertjax.model.splash import splash_attention

Array = jax.Array

BATCH_LENGTH_EMBED = ("activation_batch", "activation_length", "activation_embed")


def _dtype(name: str) -> Any:
    return jnp.dtype(name)


def _kernel_init(config: ModelConfig, axes: tuple[str | None, ...]) -> Any:
    # google-research/bert: truncated normal with stddev initializer_range.
    init = nn.initializers.truncated_normal(stddev=config.initializer_range)
    return nn.with_logical_partitioning(init, axes)


def _zeros(axes: tuple[str | None, ...]) -> Any:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes: tuple[str | None, ...]) -> Any:
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def layer_norm(config: ModelConfig, name: str | None = None) -> nn.Module:
    """The model's norm (`norm_type`): LayerNorm, with a bias unless `norm_bias` is off, or RMSNorm;
    logically partitioned scale and bias, statistics in float32."""
    common = dict(
        epsilon=config.layer_norm_eps,
        dtype=_dtype(config.dtype),
        param_dtype=_dtype(config.param_dtype),
        scale_init=_ones(("embed",)),
        name=name,
    )
    if config.norm_type == "rmsnorm":
        return nn.RMSNorm(**common)
    return nn.LayerNorm(use_bias=config.norm_bias, bias_init=_zeros(("embed",)), **common)


def mesh_axes_of(logical_axis: str) -> frozenset[str]:
    """The mesh axes of more than one device that the logical-axis rules in effect put
    `logical_axis` on, in the current mesh (`jax.set_mesh`); none outside a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return frozenset()
    axes = nn.logical_to_mesh_axes((logical_axis,))[0]
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return frozenset(name for name in names if mesh.shape[name] > 1)


def position_ids(segments: Array) -> Array:
    """Token positions counted from the start of each segment (see BertModel); padding goes on
    counting from the segment before it, so a 0/1 mask gives 0, 1, 2, ... along the row."""
    index = jnp.arange(segments.shape[-1])
    previous = jnp.pad(segments[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    starts = (segments != previous) & ((segments != 0) | (index == 0))
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


def attention_allowed(segments: Array, window: int = 0) -> Array:
    """[batch, 1, query, key] True where the query may attend to the key: a key of the query's
    own segment (padding keys never; padding queries, whose outputs are unused, see all keys),
    and with `window` > 0 no more than window // 2 tokens away (sliding-window attention)."""
    query, key = segments[:, None, :, None], segments[:, None, None, :]
    allowed = (key > 0) & ((query == key) | (query == 0))
    if window:
        index = jnp.arange(segments.shape[-1])
        allowed = allowed & (jnp.abs(index[:, None] - index[None, :]) <= window // 2)
    return allowed


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's head slopes (Press et al. 2022): 2^(-8i/n) for i = 1..n when n is a power of two;
    otherwise those of the power of two below, then every other slope of the one above."""

    def powers(n: int) -> list[float]:
        return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]

    below = 2 ** math.floor(math.log2(heads))
    return powers(below) + powers(2 * below)[0::2][: heads - below]


def alibi_bias(heads: int, length: int) -> Array:
    """[1, heads, query, key] float32: -slope * |query - key|, the symmetric (bidirectional) ALiBi
    of MosaicBERT. Keys of other segments are masked anyway, so row distance is segment distance."""
    index = jnp.arange(length)
    distance = jnp.abs(index[:, None] - index[None, :]).astype(jnp.float32)
    return -jnp.asarray(alibi_slopes(heads), jnp.float32)[None, :, None, None] * distance[None, None]


def rotary_tables(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """RoPE's cos and sin, [batch, length, 1, head_dim // 2] in float32, for `positions` [batch,
    length] (Su et al. 2021; the frequencies theta^(-2j / head_dim) of Hugging Face's RoPE)."""
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    angles = positions[..., None].astype(jnp.float32) / (theta**exponents)
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def rotate(x: Array, tables: tuple[Array, Array]) -> Array:
    """Rotary embedding of queries or keys [batch, length, heads, head_dim], in float32: each pair
    (i, i + head_dim / 2) turned by its position's angle (Hugging Face's `rotate_half` layout)."""
    cos, sin = tables
    half = x.shape[-1] // 2
    first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    turned = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return turned.astype(x.dtype)


def sinusoidal_positions(positions: Array, width: int) -> Array:
    """[..., width] float32: sin(p * f_k) in column 2k and cos(p * f_k) in column 2k + 1, with
    f_k = 10000^(-2k / width) (Vaswani et al. 2017, in Cramming's interleaved layout)."""
    frequencies = jnp.exp(jnp.arange(0, width, 2, dtype=jnp.float32) * (-math.log(10000.0) / width))
    angles = positions[..., None].astype(jnp.float32) * frequencies
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*positions.shape, width)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout: the position table only
    for `position_embedding_type="absolute"` (fixed sines times a learned scale for
    "scaled_sinusoidal"), token types only if `type_vocab_size` > 0, the norm only with
    `embedding_norm`; tables of `embedding_size` are projected to hidden_size last."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        embed = functools.partial(nn.Embed, dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype))
        width = cfg.embedding_width
        self.word_embeddings = embed(cfg.vocab_size, width, embedding_init=_kernel_init(cfg, ("vocab", "embed")))
        if cfg.position_embedding_type == "absolute":
            self.position_embeddings = embed(
                cfg.max_position_embeddings, width, embedding_init=_kernel_init(cfg, ("position", "embed"))
            )
        if cfg.position_embedding_type == "scaled_sinusoidal":
            init = nn.initializers.constant(width**-0.5)
            self.position_scale = self.param(
                "position_scale", nn.with_logical_partitioning(init, ()), (), _dtype(cfg.param_dtype)
            )
        if cfg.type_vocab_size:
            self.token_type_embeddings = embed(
                cfg.type_vocab_size, width, embedding_init=_kernel_init(cfg, ("token_type", "embed"))
            )
        if cfg.embedding_norm:
            self.layer_norm = layer_norm(cfg)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        if width != cfg.hidden_size:  # factorised embeddings: up to the encoder's width
            self.embeddings_project = dense(cfg, width, cfg.hidden_size, (None, "embed"))

    def __call__(self, input_ids: Array, token_type_ids: Array, segments: Array, deterministic: bool) -> Array:
        return self.project(self.lookup(input_ids, token_type_ids, segments, deterministic))

    def lookup(self, input_ids: Array, token_type_ids: Array, segments: Array, deterministic: bool) -> Array:
        """The tables' sum, normalised and dropped out, at the tables' width (ELECTRA's generator
        shares this part and projects it with its own `project`)."""
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        x = jnp.take(self.word_table().astype(dtype), input_ids, axis=0)
        if cfg.position_embedding_type == "absolute":
            # The position table (512 x hidden) is always gathered whole before the lookup: moving
            # its rows out of an embed split costs more than the table.
            positions = nn.with_logical_constraint(self.position_embeddings.embedding, ("position", None))
            x = x + jnp.take(positions.astype(dtype), position_ids(segments) + cfg.position_offset, axis=0)
        elif cfg.position_embedding_type == "scaled_sinusoidal":  # positions restart in each segment
            x = x + (sinusoidal_positions(position_ids(segments), cfg.embedding_width) * self.position_scale).astype(
                dtype
            )
        if cfg.type_vocab_size:
            x = x + self.token_types(token_type_ids)
        x = nn.with_logical_constraint(x, BATCH_LENGTH_EMBED)
        if cfg.embedding_norm:
            x = self.layer_norm(x)
        return self.dropout(x, deterministic=deterministic)

    def project(self, x: Array) -> Array:
        """Factorised embeddings up to the encoder's width (none when the widths are equal)."""
        if self.config.embedding_width == self.config.hidden_size:
            return x
        return nn.with_logical_constraint(self.embeddings_project(x), BATCH_LENGTH_EMBED)

    def word_table(self) -> Array:
        """The word-embedding table for the lookup and the tied MLM decoder, gathered along its
        embed axis first (as FSDP gathers every kernel before its matmul) unless the batch is split
        over just the mesh axes that split the table's embed axis (FSDP alone, or no split).

        Looked up as stored, its embed axis split over fsdp, the table gives rows split along
        embed that must move to batch-split rows. With the batch split over fsdp alone that is one
        all-to-all. With the batch split over data and fsdp, or the vocab axis split (tensor
        parallelism), GSPMD did it by gathering the whole global batch's [batch, length, hidden]
        on every device, forward and backward (its "involuntary full rematerialization"; see
        benchmarks/sharded_collectives.py). Gathered first, the table is looked up where the
        rows are, and the decoder reuses the same gathered table; under FSDP alone gathering
        would only add a second reduction of the table's gradient.
        """
        table = self.word_embeddings.embedding
        embed = mesh_axes_of("embed")
        if embed and (mesh_axes_of("vocab") or mesh_axes_of("activation_batch") != embed):
            table = nn.with_logical_constraint(table, ("vocab", None))
        return table

    def token_types(self, token_type_ids: Array) -> Array:
        """The token-type embeddings as a one-hot matmul (as google-research/bert), not a gather.

        The table has 2 rows, so the gather's gradient is a scatter-add of every token into 2 rows:
        on a GPU XLA's scatter took a third of a BERT-base step, all its atomic adds landing on the
        same 1,536 numbers (docs/performance.md). The matmul's gradient is
        a [2, tokens] x [tokens, hidden] product. Exact, as the gather: each output is one table
        row in the compute dtype (at the highest precision, so that float32 runs on GPUs and TPUs do
        not round the table to TF32 or bf16). A one-row table (RoBERTa) reads every token as type 0,
        as RoBERTa's tokenizer gives them, so a sentence pair's B half is not left without one.
        """
        dtype = _dtype(self.config.dtype)
        if self.config.type_vocab_size == 1:
            token_type_ids = jnp.zeros_like(token_type_ids)
        one_hot = jax.nn.one_hot(token_type_ids, self.config.type_vocab_size, dtype=dtype)
        table = self.token_type_embeddings.embedding.astype(dtype)
        return jnp.einsum("...t,td->...d", one_hot, table, precision=jax.lax.Precision.HIGHEST)

    def attend(self, x: Array) -> Array:
        """Logits against the word-embedding table (the tied MLM decoder)."""
        return einsum("...d,vd->...v", x, self.word_table(), self.config.dtype)


class Projection(nn.Module):
    """A projection with a bias: x's last `contracted` axes against the kernel's first ones, plus a
    bias over the kernel's other axes.

    The kernel keeps its real shape and logical axes (attention's [embed, heads, kv] and
    [heads, kv, embed]), but the product is one 2-D matmul on flattened views, [..., in] x [in, out].
    XLA's CPU matmuls take a transposed 2-D operand as it is, but canonicalise a dot that
    contracts two kernel axes by copying the kernel (or the activation) transposed, in the forward
    and the backward pass; the flat form saves those copies. Flattening merges a sharded `heads` axis with the unsharded `kv` axis after it, which
    GSPMD shards without communication. The bias is added in the matmul's output dtype (`einsum`'s:
    float32 on a CPU, the compute dtype on GPUs and TPUs), then the result is cast to the compute
    dtype.

    (flax's DenseGeneral creates multi-axis kernels flat and reshapes them, which breaks
    logical sharding constraints at initialisation; this makes the kernel in its real shape.)
    """

    config: ModelConfig
    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    contracted: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        kernel = self.param("kernel", _kernel_init(cfg, self.kernel_axes), self.kernel_shape, _dtype(cfg.param_dtype))
        bias_shape, bias_axes = self.kernel_shape[self.contracted :], self.kernel_axes[self.contracted :]
        lead = x.shape[: x.ndim - self.contracted]
        features_in = math.prod(self.kernel_shape[: self.contracted])
        flat = einsum("...i,io->...o", x.reshape(*lead, features_in), kernel.reshape(features_in, -1), cfg.dtype)
        out = flat.reshape(*lead, *bias_shape)
        if self.use_bias:
            out = out + self.param("bias", _zeros(bias_axes), bias_shape, _dtype(cfg.param_dtype)).astype(flat.dtype)
        return out.astype(_dtype(cfg.dtype))


def dense(
    config: ModelConfig,
    features_in: int,
    features: int,
    axes: tuple[str | None, str | None],
    name: str | None = None,
    use_bias: bool = True,
) -> Projection:
    """A Dense layer (kernel [in, out], bias [out]) as a Projection."""
    return Projection(config, (features_in, features), axes, use_bias=use_bias, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention under a [batch, 1, query, key] mask, output projection included;
    with RoPE tables (`rotary_tables`), queries and keys are rotated first."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, allowed: Array, rope: tuple[Array, Array] | None, deterministic: bool) -> Array:
        cfg = self.config
        heads, head_dim = cfg.num_attention_heads, cfg.head_dim
        project = functools.partial(
            Projection,
            cfg,
            (cfg.hidden_size, heads, head_dim),
            ("embed", "heads", "kv"),
            use_bias=cfg.attention_bias,
        )
        query = project(name="query")(x)
        key = project(name="key")(x)
        value = project(name="value")(x)
        if rope is not None:
            query, key = rotate(query, rope), rotate(key, rope)
        heads_axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
        query = nn.with_logical_constraint(query, heads_axes)
        key = nn.with_logical_constraint(key, heads_axes)
        value = nn.with_logical_constraint(value, heads_axes)

        bias = alibi_bias(heads, x.shape[1]) if cfg.position_embedding_type == "alibi" else None
        if cfg.attention == "einsum":
            # `attention_batch_chunks` equal slices of the batch in turn, each with its own dropout
            # (Dropout_0, Dropout_1, ...): smaller [rows, heads, query, key] scores, faster on a CPU.
            batch = query.shape[0]
            chunks = math.gcd(batch, cfg.attention_batch_chunks)
            masks = jnp.split(allowed, chunks) if allowed.shape[0] == batch else [allowed] * chunks
            parts = [
                self.einsum_attention(q, k, v, m, bias, deterministic)
                for q, k, v, m in zip(*(jnp.split(t, chunks) for t in (query, key, value)), masks)
            ]
            context = parts[0] if chunks == 1 else jnp.concatenate(parts)
        elif cfg.attention == "splash":  # segment ids and the layer's kind, not a mask (BertModel)
            segments, local = allowed
            context = splash_attention(query, key, value, segments, local, cfg.local_attention)
        else:  # jax's fused attention ("cudnn") or its XLA reference ("xla"); no dropout (see ModelConfig)
            context = jax.nn.dot_product_attention(
                query, key, value, bias=bias, mask=allowed, implementation=cfg.attention
            )
        context = nn.with_logical_constraint(context.astype(_dtype(cfg.dtype)), heads_axes)
        out = Projection(
            cfg,
            (heads, head_dim, cfg.hidden_size),
            ("heads", "kv", "embed"),
            contracted=2,
            use_bias=cfg.attention_bias,
            name="output",
        )(context)
        return nn.with_logical_constraint(out, BATCH_LENGTH_EMBED)

    def einsum_attention(
        self, query: Array, key: Array, value: Array, allowed: Array, bias: Array | None, deterministic: bool
    ) -> Array:
        """Softmax attention over [batch, length, heads, head_dim] operands, dropout on the probabilities.

        Scores and softmax in float32 (as flax's dot_product_attention with force_fp32_for_softmax),
        plus ALiBi's `bias` if any. Masked keys get float32's minimum added (Hugging Face's additive
        mask) rather than selected in: their probability is exactly 0 either way (a row with no
        allowed key attends uniformly, as a select would make it), and an add passes its gradient
        through unchanged, where a select costs the backward pass one more sweep over the
        [batch, heads, query, key] scores. The batched matmuls run head-major ([batch, heads,
        length, head_dim] operands), which XLA's CPU runs faster than [batch, length, heads,
        head_dim] ones, for one transpose of q, k, v and the context each.
        """
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        query, key, value = (t.transpose(0, 2, 1, 3) for t in (query, key, value))
        scores = einsum("bhqd,bhkd->bhqk", query / jnp.sqrt(cfg.head_dim).astype(dtype), key, dtype)
        scores = scores.astype(jnp.float32) if bias is None else scores.astype(jnp.float32) + bias
        scores = scores + jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        probs = Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic)
        return einsum("bhqk,bhkd->bhqd", probs, value, dtype).transpose(0, 2, 1, 3)


class EncoderLayer(nn.Module):
    """One transformer layer: attention, then a feed-forward, each added to the residual stream.
    Post-LN (BERT): add, then LayerNorm. Pre-LN (`layer_norm_position="pre"`): the norm on each
    sublayer's input; the same two norms (same names), placed before, except that layer 0 has no
    attention norm without `first_attention_norm` (`first`: this is layer 0). The feed-forward is
    BERT's dense-activation-dense or, with `mlp_type="glu"`, a gated linear unit whose input and
    gate halves are one kernel [hidden, 2, intermediate] (split along an axis no mesh shards)."""

    config: ModelConfig
    first: bool = False

    @nn.compact
    def __call__(self, x: Array, allowed: Array, rope: tuple[Array, Array] | None, deterministic: bool) -> Array:
        cfg = self.config
        dropout = Dropout(cfg.hidden_dropout_prob)
        pre = cfg.layer_norm_position == "pre"
        skip_attention_norm = pre and self.first and not cfg.first_attention_norm
        attention_norm = (lambda y: y) if skip_attention_norm else layer_norm(cfg, "attention_layer_norm")
        output_norm = layer_norm(cfg, "output_layer_norm")

        attended = SelfAttention(cfg, name="attention")(attention_norm(x) if pre else x, allowed, rope, deterministic)
        x = x + dropout(attended, deterministic=deterministic)
        x = x if pre else attention_norm(x)

        h = output_norm(x) if pre else x
        mlp_axes = ("activation_batch", "activation_length", "activation_mlp")
        if cfg.mlp_type == "glu":
            both = Projection(
                cfg,
                (cfg.hidden_size, 2, cfg.intermediate_size),
                ("embed", None, "mlp"),
                use_bias=cfg.mlp_bias,
                name="intermediate",
            )(h)
            h = activation(cfg.hidden_act)(both[..., 0, :]) * both[..., 1, :]
        else:
            h = dense(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), "intermediate", cfg.mlp_bias)(h)
            h = activation(cfg.hidden_act)(h)
        h = nn.with_logical_constraint(h, mlp_axes)
        h = dense(cfg, cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), "output", cfg.mlp_bias)(h)
        x = x + dropout(h, deterministic=deterministic)
        x = x if pre else output_norm(x)
        return nn.with_logical_constraint(x, BATCH_LENGTH_EMBED)


class ScannedEncoderLayer(EncoderLayer):
    """An EncoderLayer as the body of `nn.scan`: the residual stream is the carry; `is_global`
    (scanned, one per layer) picks the global or the sliding-window mask and RoPE tables."""

    @nn.compact
    def __call__(
        self,
        x: Array,
        is_global: Array,
        allowed: tuple[Array, Array],
        rope: tuple[tuple[Array, Array], tuple[Array, Array]] | None,
        deterministic: bool,
    ) -> tuple[Array, None]:
        mask = jax.tree.map(lambda g, loc: jnp.where(is_global, g, loc), *allowed)
        tables = None if rope is None else jax.tree.map(lambda g, loc: jnp.where(is_global, g, loc), *rope)
        return super().__call__(x, mask, tables, deterministic), None


class BertModel(nn.Module):
    """The encoder: embeddings, N layers, and the pooler: dense and tanh (`pooler_activation`) on
    the first ([CLS]) token, or with `classifier_head="prediction"` ModernBERT's dense, activation and norm on the
    first token or the tokens' mean (`classifier_pooling`).

    `attention_mask` [batch, length] is 0 on padding and otherwise a segment number: tokens attend
    only to tokens of their own segment, and positions restart at each segment's first token. A
    0/1 mask is the usual one-example row; a packed row numbers its examples 1, 2, 3, ...
    Returns (sequence_output [batch, length, hidden], pooled_output [batch, hidden]); with
    `pooled_positions` [batch, slots] the pooler runs at those positions: [batch, slots, hidden].
    `embedded` replaces the embedding tables' lookup (the ids then only give the segments).
    """

    config: ModelConfig
    add_pooling_layer: bool = True  # token-level heads (tagging, span) have no pooler, as in Hugging Face

    def setup(self) -> None:
        cfg = self.config
        self.embeddings = Embeddings(cfg)

        def maybe_remat(layer: type[EncoderLayer], scanned: bool) -> Any:
            if cfg.remat == "none":
                return layer
            # Recompute the layer's activations in the backward pass.
            policy = {
                "full": jax.checkpoint_policies.nothing_saveable,
                "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
            }[cfg.remat]
            # (self, x, [is_global,] allowed, rope, deterministic); inside a scan, nothing to keep apart from CSE
            static = (5,) if scanned else (4,)
            return nn.remat(layer, policy=policy, static_argnums=static, prevent_cse=not scanned)

        if cfg.scan_layers:  # one layer's program, run over stacked parameters
            # Layer 0 runs on its own when its parameters differ (`first_layer_apart`).
            apart = cfg.first_layer_apart
            self.first_layer = maybe_remat(EncoderLayer, False)(cfg, first=True, name="layer_0") if apart else None
            self.layers = nn.scan(
                maybe_remat(ScannedEncoderLayer, True),
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_hidden_layers - apart,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")
        else:
            layer = maybe_remat(EncoderLayer, False)
            self.layers = [layer(cfg, first=i == 0, name=f"layer_{i}") for i in range(cfg.num_hidden_layers)]
        if cfg.layer_norm_position == "pre":  # pre-LN: the residual stream is normalised once at the end
            self.final_layer_norm = layer_norm(cfg)
        if self.add_pooling_layer:
            self.pooler = dense(
                cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed_out"), use_bias=self.pooler_bias
            )
            if cfg.classifier_head == "prediction":
                self.pooler_norm = layer_norm(cfg)

    @property
    def pooler_bias(self) -> bool:
        return self.config.head_bias or self.config.classifier_head == "pooler"

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        deterministic: bool = True,
        pooled_positions: Array | None = None,
        embedded: Array | None = None,
    ) -> tuple[Array, Array | None]:
        cfg = self.config
        segments = attention_mask.astype(jnp.int32)
        if embedded is None:
            x = self.embeddings(input_ids, token_type_ids, segments, deterministic)
        else:  # another model's `Embeddings.lookup` (ELECTRA's shared tables), projected by ours
            x = self.embeddings.project(embedded)
        # Global and sliding-window layers differ in their mask and their RoPE base. Splash
        # attention takes the segment ids and whether the layer is a sliding-window one instead.
        if cfg.attention == "splash":
            allowed: Any = ((segments, jnp.asarray(False)), (segments, jnp.asarray(True)))
        else:
            allowed = (attention_allowed(segments), attention_allowed(segments, cfg.local_attention))
        rope = None
        if cfg.position_embedding_type == "rope":
            positions = position_ids(segments)
            rope = tuple(
                rotary_tables(positions, cfg.head_dim, t) for t in (cfg.global_rope_theta, cfg.local_rope_theta)
            )

        def run_layer(layer: Any, i: int, x: Array) -> Array:
            kind = 0 if cfg.is_global_layer(i) else 1
            return layer(x, allowed[kind], None if rope is None else rope[kind], deterministic)

        if cfg.scan_layers:
            start = 0
            if self.first_layer is not None:
                x, start = run_layer(self.first_layer, 0, x), 1
            is_global = jnp.array([cfg.is_global_layer(i) for i in range(start, cfg.num_hidden_layers)])
            x, _ = self.layers(x, is_global, allowed, rope, deterministic)
        else:
            for i, layer in enumerate(self.layers):
                x = run_layer(layer, i, x)
        if self.config.layer_norm_position == "pre":
            x = nn.with_logical_constraint(self.final_layer_norm(x), BATCH_LENGTH_EMBED)
        if not self.add_pooling_layer:
            return x, None
        if pooled_positions is not None:
            first = jnp.take_along_axis(x, pooled_positions[..., None], axis=1)
        elif cfg.classifier_pooling == "mean":  # the mean over the row's tokens (ModernBERT's "mean")
            weights = (segments > 0).astype(x.dtype)[..., None]
            first = (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1)
        else:
            first = x[:, 0]
        if cfg.classifier_head == "prediction":
            return x, self.pooler_norm(activation(cfg.hidden_act)(self.pooler(first)))
        return x, activation(cfg.pooler_activation)(self.pooler(first))

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


class MaskedLMHead(nn.Module):
    """Dense + activation + norm transform, decoder tied to the word embeddings, output bias (BERT;
    ModernBERT's head is the same with `head_bias` off and no norm bias). Without `head_transform`
    the decoder reads the hidden state as it is; without `tie_word_embeddings` it is a kernel of
    its own (NeoBERT)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden: Array, decode: Any) -> Array:
        cfg = self.config
        width = cfg.embedding_width  # back to the tied table's width
        h = hidden
        if cfg.head_transform:
            h = dense(cfg, cfg.hidden_size, width, ("embed", "embed_out"), "transform", cfg.head_bias)(h)
            h = activation(cfg.hidden_act)(h)
            h = layer_norm(cfg, "transform_layer_norm")(h)
        if cfg.tie_word_embeddings:
            logits = decode(h).astype(jnp.float32)
        else:
            logits = dense(cfg, width, cfg.vocab_size, ("embed", "vocab"), "decoder", use_bias=False)(h)
            logits = logits.astype(jnp.float32)
        if cfg.decoder_bias:
            bias = self.param("bias", _zeros(("vocab",)), (cfg.vocab_size,), _dtype(cfg.param_dtype))
            logits = logits + bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("activation_batch", "activation_length", "activation_vocab"))


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM head (evaluated only at the masked positions) and the NSP head.

    Returns (mlm_logits [batch, predictions, vocab], nsp_logits [batch, 2]), both float32. For
    packed rows (see BertModel), `next_sentence_positions` [batch, slots] gives each example's
    [CLS] position and nsp_logits are [batch, slots, 2].
    """

    config: ModelConfig

    def setup(self) -> None:
        self.bert = BertModel(self.config)
        self.mlm_head = MaskedLMHead(self.config)
        self.nsp_head = dense(self.config, self.config.hidden_size, 2, ("embed", "classes"))

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        masked_lm_positions: Array,
        deterministic: bool = True,
        next_sentence_positions: Array | None = None,
    ) -> tuple[Array, Array]:
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask, deterministic, next_sentence_positions)
        # Gather the hidden states at the masked positions only (google-research/bert).
        gathered = jnp.take_along_axis(sequence, masked_lm_positions[..., None], axis=1)
        gathered = nn.with_logical_constraint(gathered, BATCH_LENGTH_EMBED)
        mlm_logits = self.mlm_head(gathered, self.bert.attend)
        nsp_logits = self.nsp_head(pooled).astype(jnp.float32)
        return mlm_logits, nsp_logits


class BertForSequenceClassification(nn.Module):
    """BERT with a linear head on the (dropped-out) pooled output, as google-research/bert's
    run_classifier.py: `num_labels` logits, or one score for regression (num_labels=1).

    Returns logits [batch, num_labels], float32.
    """

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        deterministic: bool = True,
    ) -> Array:
        cfg = self.config
        _, pooled = BertModel(cfg, name="bert")(input_ids, token_type_ids, attention_mask, deterministic)
        pooled = Dropout(cfg.hidden_dropout_prob)(pooled, deterministic=deterministic)
        logits = dense(cfg, cfg.hidden_size, self.num_labels, ("embed", "classes"), "classifier")(pooled)
        return logits.astype(jnp.float32)


class TokenHead(nn.Module):
    """ModernBERT's prediction head on every token (`classifier_head="prediction"`): dense (with a
    bias if `head_bias`), the activation, a norm; before a token or span classifier."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        h = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed_out"), "dense", cfg.head_bias)(x)
        h = layer_norm(cfg, "norm")(activation(cfg.hidden_act)(h))
        return nn.with_logical_constraint(h, BATCH_LENGTH_EMBED)


class BertForTokenClassification(nn.Module):
    """BERT with a linear head on every token's (dropped-out) output, as Hugging Face's
    `BertForTokenClassification` (no pooler): tagging, e.g. named entities.

    Returns logits [batch, length, num_labels], float32.
    """

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        deterministic: bool = True,
    ) -> Array:
        cfg = self.config
        bert = BertModel(cfg, add_pooling_layer=False, name="bert")
        sequence, _ = bert(input_ids, token_type_ids, attention_mask, deterministic)
        sequence = TokenHead(cfg, name="token_head")(sequence) if cfg.classifier_head == "prediction" else sequence
        sequence = Dropout(cfg.hidden_dropout_prob)(sequence, deterministic=deterministic)
        logits = dense(cfg, cfg.hidden_size, self.num_labels, ("embed", "classes"), "token_classifier")(sequence)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("activation_batch", "activation_length", None))


class BertForQuestionAnswering(nn.Module):
    """BERT with a span head, as Hugging Face's `BertForQuestionAnswering` (no pooler): a start and
    an end logit per token from one linear layer (`qa_outputs`).

    Returns logits [batch, length, 2] (start, end), float32.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        deterministic: bool = True,
    ) -> Array:
        cfg = self.config
        bert = BertModel(cfg, add_pooling_layer=False, name="bert")
        sequence, _ = bert(input_ids, token_type_ids, attention_mask, deterministic)
        if cfg.classifier_head == "prediction":
            sequence = Dropout(cfg.hidden_dropout_prob)(TokenHead(cfg, name="token_head")(sequence), deterministic)
        logits = dense(cfg, cfg.hidden_size, 2, ("embed", "classes"), "qa_outputs")(sequence)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("activation_batch", "activation_length", None))
