"""BERT in Flax Linen: embeddings, post-LN encoder, pooler, masked-LM and next-sentence heads.

Pure functions of their parameters (Devlin et al. 2018; google-research/bert `modeling.py`).
Every kernel is created with `nn.with_logical_partitioning` and the main activations are
constrained with `nn.with_logical_constraint`, so a mesh and a set of logical-axis rules
(`bertjax.config.MeshConfig`) decide the sharding; the modules never name a device axis.
Parameter names follow Hugging Face's layout closely enough that `bertjax.hf_weights` maps
one to the other by rule.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.config import ModelConfig

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


def activation(name: str) -> Any:
    """The feed-forward non-linearity; "gelu" is the exact erf form, as in BERT."""
    return {
        "gelu": functools.partial(jax.nn.gelu, approximate=False),
        "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
        "relu": jax.nn.relu,
    }[name]


def layer_norm(config: ModelConfig, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with logically partitioned scale and bias (statistics in float32)."""
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=_dtype(config.dtype),
        param_dtype=_dtype(config.param_dtype),
        scale_init=_ones(("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        embed = functools.partial(nn.Embed, dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype))
        self.word_embeddings = embed(
            cfg.vocab_size, cfg.hidden_size, embedding_init=_kernel_init(cfg, ("vocab", "embed"))
        )
        self.position_embeddings = embed(
            cfg.max_position_embeddings, cfg.hidden_size, embedding_init=_kernel_init(cfg, ("position", "embed"))
        )
        self.token_type_embeddings = embed(
            cfg.type_vocab_size, cfg.hidden_size, embedding_init=_kernel_init(cfg, ("token_type", "embed"))
        )
        self.layer_norm = layer_norm(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
        positions = jnp.arange(input_ids.shape[-1])[None, :]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings(token_type_ids)
        x = nn.with_logical_constraint(x, BATCH_LENGTH_EMBED)
        return self.dropout(self.layer_norm(x), deterministic=deterministic)

    def attend(self, x: Array) -> Array:
        """Logits against the word-embedding table (the tied MLM decoder)."""
        return self.word_embeddings.attend(x)


class Projection(nn.Module):
    """An einsum projection with a bias: `einsum(spec, x, kernel) + bias`, kernel of any rank.

    (flax's DenseGeneral creates multi-axis kernels flat and reshapes them, which breaks
    logical sharding constraints at initialisation; this makes the kernel in its real shape.)
    """

    config: ModelConfig
    spec: str
    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    bias_axes: tuple[str | None, ...]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        kernel = self.param("kernel", _kernel_init(cfg, self.kernel_axes), self.kernel_shape, _dtype(cfg.param_dtype))
        bias_shape = self.kernel_shape[-len(self.bias_axes) :]
        bias = self.param("bias", _zeros(self.bias_axes), bias_shape, _dtype(cfg.param_dtype))
        dtype = _dtype(cfg.dtype)
        return jnp.einsum(self.spec, x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask, output projection included."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, key_mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        heads, head_dim = cfg.num_attention_heads, cfg.head_dim
        project = functools.partial(
            Projection,
            cfg,
            "btd,dhk->bthk",
            (cfg.hidden_size, heads, head_dim),
            ("embed", "heads", "kv"),
            ("heads", "kv"),
        )
        query = project(name="query")(x)
        key = project(name="key")(x)
        value = project(name="value")(x)
        heads_axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
        query = nn.with_logical_constraint(query, heads_axes)
        key = nn.with_logical_constraint(key, heads_axes)
        value = nn.with_logical_constraint(value, heads_axes)

        dropout_rng = None
        if not deterministic and cfg.attention_probs_dropout_prob > 0:
            dropout_rng = self.make_rng("dropout")
        context = nn.dot_product_attention(
            query,
            key,
            value,
            mask=key_mask[:, None, None, :],
            dropout_rng=dropout_rng,
            dropout_rate=cfg.attention_probs_dropout_prob,
            broadcast_dropout=False,
            deterministic=deterministic,
            dtype=_dtype(cfg.dtype),
            force_fp32_for_softmax=True,
        )
        context = nn.with_logical_constraint(context, heads_axes)
        out = Projection(
            cfg,
            "bthk,hkd->btd",
            (heads, head_dim, cfg.hidden_size),
            ("heads", "kv", "embed"),
            ("embed",),
            name="output",
        )(context)
        return nn.with_logical_constraint(out, BATCH_LENGTH_EMBED)


class EncoderLayer(nn.Module):
    """One post-LN transformer layer: attention, add & norm, GELU feed-forward, add & norm."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, key_mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        dense = functools.partial(nn.Dense, dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype))
        dropout = nn.Dropout(cfg.hidden_dropout_prob)

        attended = SelfAttention(cfg, name="attention")(x, key_mask, deterministic)
        x = layer_norm(cfg, "attention_layer_norm")(x + dropout(attended, deterministic=deterministic))

        h = dense(
            cfg.intermediate_size,
            kernel_init=_kernel_init(cfg, ("embed", "mlp")),
            bias_init=_zeros(("mlp",)),
            name="intermediate",
        )(x)
        h = activation(cfg.hidden_act)(h)
        h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
        h = dense(
            cfg.hidden_size,
            kernel_init=_kernel_init(cfg, ("mlp", "embed")),
            bias_init=_zeros(("embed",)),
            name="output",
        )(h)
        x = layer_norm(cfg, "output_layer_norm")(x + dropout(h, deterministic=deterministic))
        return nn.with_logical_constraint(x, BATCH_LENGTH_EMBED)


class BertModel(nn.Module):
    """The encoder: embeddings, N layers, and the tanh pooler on the first ([CLS]) token.

    Returns (sequence_output [batch, length, hidden], pooled_output [batch, hidden]).
    """

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        self.layers = [EncoderLayer(cfg, name=f"layer_{i}") for i in range(cfg.num_hidden_layers)]
        self.pooler = nn.Dense(
            cfg.hidden_size,
            dtype=_dtype(cfg.dtype),
            param_dtype=_dtype(cfg.param_dtype),
            kernel_init=_kernel_init(cfg, ("embed", "embed_out")),
            bias_init=_zeros(("embed_out",)),
        )

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        key_mask = attention_mask.astype(bool)
        for layer in self.layers:
            x = layer(x, key_mask, deterministic)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


class MaskedLMHead(nn.Module):
    """Dense + GELU + LayerNorm transform, decoder tied to the word embeddings, output bias."""

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden: Array, decode: Any) -> Array:
        cfg = self.config
        h = nn.Dense(
            cfg.hidden_size,
            dtype=_dtype(cfg.dtype),
            param_dtype=_dtype(cfg.param_dtype),
            kernel_init=_kernel_init(cfg, ("embed", "embed_out")),
            bias_init=_zeros(("embed_out",)),
            name="transform",
        )(hidden)
        h = activation(cfg.hidden_act)(h)
        h = layer_norm(cfg, "transform_layer_norm")(h)
        logits = decode(h)
        bias = self.param("bias", _zeros(("vocab",)), (cfg.vocab_size,), _dtype(cfg.param_dtype))
        logits = logits.astype(jnp.float32) + bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("activation_batch", "activation_length", "activation_vocab"))


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM head (evaluated only at the masked positions) and the NSP head.

    Returns (mlm_logits [batch, predictions, vocab], nsp_logits [batch, 2]), both float32.
    """

    config: ModelConfig

    def setup(self) -> None:
        self.bert = BertModel(self.config)
        self.mlm_head = MaskedLMHead(self.config)
        self.nsp_head = nn.Dense(
            2,
            dtype=_dtype(self.config.dtype),
            param_dtype=_dtype(self.config.param_dtype),
            kernel_init=_kernel_init(self.config, ("embed", "classes")),
            bias_init=_zeros(("classes",)),
        )

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        masked_lm_positions: Array,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask, deterministic)
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
        pooled = nn.Dropout(cfg.hidden_dropout_prob)(pooled, deterministic=deterministic)
        logits = nn.Dense(
            self.num_labels,
            dtype=_dtype(cfg.dtype),
            param_dtype=_dtype(cfg.param_dtype),
            kernel_init=_kernel_init(cfg, ("embed", "classes")),
            bias_init=_zeros(("classes",)),
            name="classifier",
        )(pooled)
        return logits.astype(jnp.float32)
