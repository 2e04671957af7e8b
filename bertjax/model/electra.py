"""ELECTRA's pretraining model (Clark et al. 2020): a small generator and the discriminator, one module.

The discriminator is the encoder being pretrained (`bert`, the parameters every fine-tuning run
and export reads) with the replaced-token head (`discriminator_head`: dense, activation, one logit
per token, as transformers' `ElectraDiscriminatorPredictions`). The generator (`generator`, its
MLM head `mlm_head`) is a narrower encoder of the same depth that shares the discriminator's
embedding tables and their norm (ELECTRA's tied embeddings), with its own projection to its
width, and decodes with the shared word table. Sampling from the generator sits between the two
halves, in the objective (`training/electra.py`), so the model has one method per half.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.config import ModelConfig
from bertjax.model.bert import BATCH_LENGTH_EMBED, BertModel, MaskedLMHead, dense
from bertjax.model.ops import activation

Array = jax.Array


class DiscriminatorHead(nn.Module):
    """One replaced-or-original logit per token: dense, the activation, dense to 1."""

    config: ModelConfig

    @nn.compact
    def __call__(self, sequence: Array) -> Array:
        cfg = self.config
        h = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed_out"), "dense")(sequence)
        h = activation(cfg.hidden_act)(h)
        logits = dense(cfg, cfg.hidden_size, 1, ("embed", None), "prediction")(h)
        return logits[..., 0].astype(jnp.float32)


class ElectraForPreTraining(nn.Module):
    """The generator (`generate`: MLM logits at the masked positions) and the discriminator
    (`discriminate`: a logit per token); calling the module runs both, to initialise it."""

    config: ModelConfig  # the discriminator's
    generator_config: ModelConfig

    def setup(self) -> None:
        self.bert = BertModel(self.config, add_pooling_layer=False)
        self.generator = BertModel(self.generator_config, add_pooling_layer=False)
        self.mlm_head = MaskedLMHead(self.generator_config)
        self.discriminator_head = DiscriminatorHead(self.config)

    def generate(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        masked_lm_positions: Array,
        deterministic: bool = True,
    ) -> Array:
        """The generator's MLM logits [batch, predictions, vocab] (float32)."""
        segments = attention_mask.astype(jnp.int32)
        embedded = self.bert.embeddings.lookup(input_ids, token_type_ids, segments, deterministic)
        sequence, _ = self.generator(input_ids, token_type_ids, attention_mask, deterministic, embedded=embedded)
        gathered = jnp.take_along_axis(sequence, masked_lm_positions[..., None], axis=1)
        gathered = nn.with_logical_constraint(gathered, BATCH_LENGTH_EMBED)
        return self.mlm_head(gathered, self.bert.attend)

    def discriminate(
        self, input_ids: Array, token_type_ids: Array, attention_mask: Array, deterministic: bool = True
    ) -> Array:
        """The discriminator's replaced-token logits [batch, length] (float32)."""
        sequence, _ = self.bert(input_ids, token_type_ids, attention_mask, deterministic)
        return self.discriminator_head(sequence)

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        masked_lm_positions: Array,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        mlm_logits = self.generate(input_ids, token_type_ids, attention_mask, masked_lm_positions, deterministic)
        return mlm_logits, self.discriminate(input_ids, token_type_ids, attention_mask, deterministic)
