"""The mapping between bertjax parameters and Hugging Face BERT and ModernBERT state dicts (torch layout).

Our parameters are addressed by flat paths (`bert/layer_0/attention/query/kernel`); HF's by
tensor names (`bert.encoder.layer.0.attention.self.query.weight`). `flat_to_hf` and
`hf_to_flat` convert whatever subset is present: the encoder, the pooler, the pretraining heads
(`mlm_head`, `nsp_head`), a sequence-classification head (`classifier`), a token-classification
head (ours `token_classifier`, HF's `classifier` of `BertForTokenClassification`) and a span head
(`qa_outputs`). Names with or without
the `bert.` prefix are read (BertModel saves without it). A wrong shape or an unknown tensor name
raises `CheckpointError`; nothing is skipped silently.

Which Hugging Face model holds a bertjax model follows from its architecture knobs
(`hf_model_type`): BERT's (learned positions, post-LN, GELU MLP, biases everywhere) map to
`bert` (or `roberta`, with positions offset as RoBERTa's, or `electra`, with factorised
embeddings or kept from an ELECTRA import: BERT's tensors under other names),
ModernBERT's (RoPE, pre-LN without layer 0's attention norm, GLU, no token types) to
`modernbert`, whose fused tensors (`Wqkv`, the GLU's `Wi`) are split into ours and joined back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from bertjax.config import ModelConfig
from bertjax.errors import CheckpointError
from bertjax.weights.param_tree import flatten, unflatten

# HF tensors that are not parameters of their own: a buffer, and the decoder tied to the word
# embeddings (its bias tied to cls.predictions.bias).
DERIVED_HF_TENSORS = (
    "bert.embeddings.position_ids",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
)
_ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")
_MODERNBERT_ENCODER_PREFIXES = ("embeddings.", "layers.", "final_norm.")


def _layer_norm(prefix: str, hf: str, bias: bool = True) -> list[tuple[str, str, str]]:
    return [(f"{prefix}/scale", f"{hf}.weight", "copy")] + ([(f"{prefix}/bias", f"{hf}.bias", "copy")] if bias else [])


def _dense(prefix: str, hf: str, kind: str, bias: bool = True) -> list[tuple[str, str, str]]:
    bias_kind = "flatten" if kind in ("qkv", "glu_in") else "copy"
    return [(f"{prefix}/kernel", f"{hf}.weight", kind)] + (
        [(f"{prefix}/bias", f"{hf}.bias", bias_kind)] if bias else []
    )


# Where a Hugging Face tensor is several of ours joined along its first axis, its name carries
# the part: "model.layers.0.attn.Wqkv.weight@1/3" is the second third (the keys).
PART = "@"


def hf_model_type(config: ModelConfig) -> str | None:
    """The Hugging Face `model_type` whose layout holds a model of `config`, or None."""
    c = config
    bert_like = (
        c.position_embedding_type == "absolute"
        and c.layer_norm_position == "post"
        and c.mlp_type == "mlp"
        and c.norm_type == "layernorm"
        and c.type_vocab_size > 0
        and c.embedding_norm
        and c.norm_bias
        and c.attention_bias
        and c.mlp_bias
        and c.head_bias
        and c.decoder_bias
        and not c.local_attention
        and c.classifier_head == "pooler"
        and c.head_transform
        and c.tie_word_embeddings
    )
    electra = c.hf_model_type == "electra" or c.embedding_width != c.hidden_size or c.pooler_activation == "gelu"
    if bert_like and not c.position_offset and electra:
        return "electra"  # BERT's encoder under ELECTRA's names (factorised embeddings if any)
    if bert_like and c.pooler_activation == "tanh":
        return "roberta" if c.position_offset else "bert"
    if (
        c.position_embedding_type == "rope"
        and c.layer_norm_position == "pre"
        and not c.first_attention_norm
        and c.mlp_type == "glu"
        and c.norm_type == "layernorm"
        and c.type_vocab_size == 0
        and c.embedding_norm
        and c.classifier_head == "prediction"
        and c.head_transform
        and c.tie_word_embeddings
    ):
        return "modernbert"
    return None


def modernbert_name_map(config: ModelConfig, architecture: str = "") -> list[tuple[str, str, str]]:
    """(bertjax path, HF name, transform) for transformers' ModernBertForMaskedLM, or the
    fine-tuning model `architecture`: its `head` (dense, activation, norm) is our pooler and its
    norm (ForSequenceClassification) or our `token_head` (ForTokenClassification,
    ForQuestionAnswering), its `classifier` our classifier, token classifier or span head."""
    norm_bias = config.norm_bias
    rows = [("bert/embeddings/word_embeddings/embedding", "model.embeddings.tok_embeddings.weight", "copy")]
    rows += _layer_norm("bert/embeddings/layer_norm", "model.embeddings.norm", norm_bias)
    for i in range(config.num_hidden_layers):
        ours, hf = f"bert/layer_{i}", f"model.layers.{i}"
        if i:  # layer 0 takes the embeddings' norm as its attention norm
            rows += _layer_norm(f"{ours}/attention_layer_norm", f"{hf}.attn_norm", norm_bias)
        for j, proj in enumerate(("query", "key", "value")):
            for ours_part, hf_part, kind in _dense(
                f"{ours}/attention/{proj}", f"{hf}.attn.Wqkv", "qkv", config.attention_bias
            ):
                rows.append((ours_part, f"{hf_part}{PART}{j}/3", kind))
        rows += _dense(f"{ours}/attention/output", f"{hf}.attn.Wo", "attn_out", config.attention_bias)
        rows += _layer_norm(f"{ours}/output_layer_norm", f"{hf}.mlp_norm", norm_bias)
        rows += _dense(f"{ours}/intermediate", f"{hf}.mlp.Wi", "glu_in", config.mlp_bias)
        rows += _dense(f"{ours}/output", f"{hf}.mlp.Wo", "dense", config.mlp_bias)
    rows += _layer_norm("bert/final_layer_norm", "model.final_norm", norm_bias)
    heads = {
        "ModernBertForSequenceClassification": ("bert/pooler", "bert/pooler_norm", "classifier"),
        "ModernBertForTokenClassification": ("token_head/dense", "token_head/norm", "token_classifier"),
        "ModernBertForQuestionAnswering": ("token_head/dense", "token_head/norm", "qa_outputs"),
    }
    if architecture in heads:
        head, norm, classifier = heads[architecture]
        rows += _dense(head, "head.dense", "dense", config.head_bias)
        rows += _layer_norm(norm, "head.norm", norm_bias)
        return rows + _dense(classifier, "classifier", "dense")
    rows += _dense("mlm_head/transform", "head.dense", "dense", config.head_bias)
    rows += _layer_norm("mlm_head/transform_layer_norm", "head.norm", norm_bias)
    if config.decoder_bias:
        rows += [("mlm_head/bias", "decoder.bias", "copy")]
    return rows


TOKEN_CLASSIFICATION = "BertForTokenClassification"


def name_map(config: ModelConfig, architecture: str = "") -> list[tuple[str, str, str]]:
    """(bertjax path, HF name, transform) for every tensor of BertForPreTraining + the fine-tuning
    heads (or of ModernBertForMaskedLM, for a ModernBERT-shaped config: `hf_model_type`). HF's
    `classifier` is our token classifier in a `BertForTokenClassification`."""
    model_type = hf_model_type(config)
    if model_type == "modernbert":
        return modernbert_name_map(config, architecture)
    if model_type == "roberta":
        return roberta_name_map(config, architecture)
    if model_type == "electra":
        return electra_name_map(config, architecture)
    rows = [
        ("bert/embeddings/word_embeddings/embedding", "bert.embeddings.word_embeddings.weight", "copy"),
        ("bert/embeddings/position_embeddings/embedding", "bert.embeddings.position_embeddings.weight", "copy"),
        ("bert/embeddings/token_type_embeddings/embedding", "bert.embeddings.token_type_embeddings.weight", "copy"),
        *_layer_norm("bert/embeddings/layer_norm", "bert.embeddings.LayerNorm"),
    ]
    for i in range(config.num_hidden_layers):
        ours, hf = f"bert/layer_{i}", f"bert.encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            rows += _dense(f"{ours}/attention/{proj}", f"{hf}.attention.self.{proj}", "qkv")
        rows += _dense(f"{ours}/attention/output", f"{hf}.attention.output.dense", "attn_out")
        rows += _layer_norm(f"{ours}/attention_layer_norm", f"{hf}.attention.output.LayerNorm")
        rows += _dense(f"{ours}/intermediate", f"{hf}.intermediate.dense", "dense")
        rows += _dense(f"{ours}/output", f"{hf}.output.dense", "dense")
        rows += _layer_norm(f"{ours}/output_layer_norm", f"{hf}.output.LayerNorm")
    rows += _dense("bert/pooler", "bert.pooler.dense", "dense")
    rows += _dense("mlm_head/transform", "cls.predictions.transform.dense", "dense")
    rows += _layer_norm("mlm_head/transform_layer_norm", "cls.predictions.transform.LayerNorm")
    rows += [("mlm_head/bias", "cls.predictions.bias", "copy")]
    rows += _dense("nsp_head", "cls.seq_relationship", "dense")
    classifier = "token_classifier" if architecture == TOKEN_CLASSIFICATION else "classifier"
    rows += _dense(classifier, "classifier", "dense")
    rows += _dense("qa_outputs", "qa_outputs", "dense")
    return rows


# ELECTRA's names for BERT's tensors (ElectraForMaskedLM, the generator, and ElectraForPreTraining,
# the discriminator, whose head is ours `discriminator_head`; ElectraModel's without `electra.`).
_ELECTRA_NAMES = (
    ("bert.", "electra."),
    ("cls.predictions.transform.dense", "generator_predictions.dense"),
    ("cls.predictions.transform.LayerNorm", "generator_predictions.LayerNorm"),
    ("cls.predictions.bias", "generator_lm_head.bias"),
)
ELECTRA_DERIVED_TENSORS = ("generator_lm_head.weight", "electra.embeddings.position_ids")


def electra_name_map(config: ModelConfig, architecture: str = "") -> list[tuple[str, str, str]]:
    """(bertjax path, HF name, transform) for transformers' ElectraForMaskedLM and
    ElectraForPreTraining: BERT's tensors under ELECTRA's names (no pooler, no NSP head), the
    projection of factorised embeddings, the discriminator's head, and the fine-tuning heads of
    `architecture` (ElectraForSequenceClassification's head is our pooler, with
    `pooler_activation="gelu"`, then our classifier)."""
    heads = ("nsp_head", "classifier", "token_classifier", "qa_outputs", "bert/pooler")
    rows = _renamed_bert_rows(
        dataclasses.replace(config, hf_model_type="bert", embedding_size=0, pooler_activation="tanh"),
        _ELECTRA_NAMES,
        heads,
    )
    if config.embedding_width != config.hidden_size:
        rows += _dense("bert/embeddings/embeddings_project", "electra.embeddings_project", "dense")
    rows += _dense("discriminator_head/dense", "discriminator_predictions.dense", "dense")
    rows += _dense("discriminator_head/prediction", "discriminator_predictions.dense_prediction", "dense")
    return rows + _fine_tuning_rows(architecture)


def _fine_tuning_rows(architecture: str) -> list[tuple[str, str, str]]:
    """The rows of a RoBERTa or ELECTRA fine-tuning head (`<Model>For<kind>`): a sequence
    classifier's head is our pooler (dense, then tanh or GELU) and our classifier under
    `classifier.dense` and `classifier.out_proj`; a token classifier is `classifier`."""
    if architecture.endswith("ForSequenceClassification"):
        return _dense("bert/pooler", "classifier.dense", "dense") + _dense("classifier", "classifier.out_proj", "dense")
    if architecture.endswith("ForTokenClassification"):
        return _dense("token_classifier", "classifier", "dense")
    if architecture.endswith("ForQuestionAnswering"):
        return _dense("qa_outputs", "qa_outputs", "dense")
    return []


# RoBERTa's names for BERT's tensors (RobertaForMaskedLM; RobertaModel's without `roberta.`).
_ROBERTA_NAMES = (
    ("bert.", "roberta."),
    ("cls.predictions.transform.dense", "lm_head.dense"),
    ("cls.predictions.transform.LayerNorm", "lm_head.layer_norm"),
    ("cls.predictions.bias", "lm_head.bias"),
)
ROBERTA_DERIVED_TENSORS = ("lm_head.decoder.weight", "lm_head.decoder.bias", "roberta.embeddings.position_ids")


def roberta_name_map(config: ModelConfig, architecture: str = "") -> list[tuple[str, str, str]]:
    """(bertjax path, HF name, transform) for transformers' RobertaForMaskedLM (and RobertaModel's
    pooler): BERT's tensors under RoBERTa's names (no NSP head), and the fine-tuning heads of
    `architecture`. RobertaForSequenceClassification's head is BERT's pooler and classifier under
    other names (dense and tanh on the first token, then the output projection; RoBERTa also
    drops out the first token's state before its dense, in training only)."""
    heads = ("nsp_head", "classifier", "token_classifier", "qa_outputs")
    rows = _renamed_bert_rows(dataclasses.replace(config, position_offset=0), _ROBERTA_NAMES, heads)
    if architecture == "RobertaForSequenceClassification":
        rows = [row for row in rows if not row[0].startswith("bert/pooler")]
    return rows + _fine_tuning_rows(architecture)


def _renamed_bert_rows(
    config: ModelConfig, names: tuple[tuple[str, str], ...], left_out: tuple[str, ...]
) -> list[tuple[str, str, str]]:
    """BERT's rows for `config` under another model's names (`names`: HF prefix -> prefix), less
    our parameters under `left_out`."""
    rows = []
    for ours, hf, kind in name_map(config):
        if ours.startswith(left_out):
            continue
        for old, new in names:
            if hf.startswith(old):
                hf = new + hf[len(old) :]
        rows.append((ours, hf, kind))
    return rows


def _to_hf(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "copy":
        return value
    if kind == "flatten":  # query/key/value bias [heads, head_dim] -> [heads*head_dim]
        return value.reshape(-1)
    if kind == "qkv":  # [hidden, heads, head_dim] -> [heads*head_dim, hidden]
        return value.reshape(value.shape[0], -1).T
    if kind == "attn_out":  # [heads, head_dim, hidden] -> [hidden, heads*head_dim]
        return value.reshape(-1, value.shape[-1]).T
    if kind == "glu_in":  # [hidden, 2, intermediate] -> [2*intermediate, hidden]: input rows, then gate rows
        return value.reshape(value.shape[0], -1).T
    return value.T  # dense: [in, out] -> [out, in]


def _hf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The torch-layout shape of one of our parameters (what `_to_hf` makes of it)."""
    if kind == "copy":
        return tuple(shape)
    if kind == "flatten":
        return (int(np.prod(shape)),)
    if kind == "qkv":
        return (shape[1] * shape[2], shape[0])
    if kind == "attn_out":
        return (shape[2], shape[0] * shape[1])
    if kind == "glu_in":
        return (shape[1] * shape[2], shape[0])
    return tuple(reversed(shape))


def _our_shape(path: str, kind: str, hf_shape: tuple[int, ...], config: ModelConfig) -> tuple[int, ...]:
    """The shape our parameter has, given the config (and the HF shape for the free head sizes)."""
    h, heads, head_dim = config.hidden_size, config.num_attention_heads, config.head_dim
    if kind == "qkv":
        return (h, heads, head_dim)
    if kind == "flatten":  # the query/key/value biases, or a GLU's input and gate biases
        return (2, config.intermediate_size) if path.endswith("intermediate/bias") else (heads, head_dim)
    if kind == "attn_out":
        return (heads, head_dim, h)
    if path.startswith(("classifier", "token_classifier")):
        return tuple(reversed(hf_shape))  # the number of labels comes from the checkpoint
    if path.startswith("qa_outputs"):
        return (h, 2) if path.endswith("kernel") else (2,)
    e = config.embedding_width
    known = {
        "bert/embeddings/word_embeddings/embedding": (config.vocab_size, e),
        "bert/embeddings/position_embeddings/embedding": (config.max_position_embeddings, e),
        "bert/embeddings/token_type_embeddings/embedding": (config.type_vocab_size, e),
        "bert/embeddings/embeddings_project/kernel": (e, h),
        "mlm_head/transform/kernel": (h, e),
        "mlm_head/transform/bias": (e,),
        "mlm_head/bias": (config.vocab_size,),
        "nsp_head/kernel": (h, 2),
        "nsp_head/bias": (2,),
        "discriminator_head/prediction/kernel": (h, 1),
        "discriminator_head/prediction/bias": (1,),
    }
    if path in known:
        return known[path]
    if path.startswith(("bert/embeddings/layer_norm", "mlm_head/transform_layer_norm")):
        return (e,)
    if kind == "glu_in":
        return (h, 2, config.intermediate_size)
    if path.endswith("intermediate/kernel"):
        return (h, config.intermediate_size)
    if path.endswith("intermediate/bias"):
        return (config.intermediate_size,)
    if path.endswith("/output/kernel"):
        return (config.intermediate_size, h)
    if path.endswith("/kernel"):
        return (h, h)
    return (h,)  # biases and LayerNorm parameters of width hidden


def hf_head_architecture(flat: Mapping[str, Any], config: ModelConfig) -> str:
    """The HF class of a fine-tuned model's head in `flat` ("" for none, or where BERT's names do
    not depend on it)."""
    model_type = hf_model_type(config)
    if model_type in ("roberta", "modernbert", "electra"):
        heads = {
            "classifier": "ForSequenceClassification",
            "token_classifier": "ForTokenClassification",
            "qa_outputs": "ForQuestionAnswering",
        }
        name = {"roberta": "Roberta", "modernbert": "ModernBert", "electra": "Electra"}[model_type]
        return next((f"{name}{kind}" for head, kind in heads.items() if f"{head}/kernel" in flat), "")
    return TOKEN_CLASSIFICATION if "token_classifier/kernel" in flat else ""


def flat_to_hf(flat: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """HF tensors (numpy, torch layout) for the parameters present in `flat` (path -> array)."""
    out = {}
    architecture = hf_head_architecture(flat, config)
    for ours, hf, kind in name_map(config, architecture):
        if ours in flat:
            out[hf] = np.ascontiguousarray(_to_hf(np.asarray(flat[ours]), kind))
    joined: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name in [n for n in out if PART in n]:
        whole, part = name.split(PART)
        joined.setdefault(whole, []).append((part, out.pop(name)))
    for whole, parts in joined.items():
        out[whole] = np.concatenate([value for _, value in sorted(parts)], axis=0)
    return out


def _split_parts(tensors: Mapping[str, np.ndarray], parts: dict[str, int], where: str) -> dict[str, np.ndarray]:
    """`tensors` with each joined tensor (`parts`: name -> count) cut into its parts."""
    out = {}
    for name, value in tensors.items():
        count = parts.get(name)
        if count is None:
            out[name] = value
            continue
        value = np.asarray(value)
        if value.shape[0] % count:
            raise CheckpointError(f"{where}: tensor {name} has shape {tuple(value.shape)}, not {count} equal parts")
        for j, piece in enumerate(np.split(value, count, axis=0)):
            out[f"{name}{PART}{j}/{count}"] = piece
    return out


def hf_to_flat(
    tensors: Mapping[str, np.ndarray], config: ModelConfig, where: str = "checkpoint", architecture: str = ""
) -> dict[str, Any]:
    """Our flat parameters (path -> numpy) from HF tensors, with or without the `bert.` prefix;
    `architecture` is the HF class the tensors were saved from (config.json's `architectures`).

    Checks every shape against `config`; an unknown tensor name is a `CheckpointError`.
    """
    rows = name_map(config, architecture)
    by_hf = {hf: (ours, kind) for ours, hf, kind in rows}
    model_type = hf_model_type(config)
    if model_type == "modernbert":
        prefix, encoder, derived = "model.", _MODERNBERT_ENCODER_PREFIXES, ("decoder.weight",)
    elif model_type == "roberta":
        prefix, encoder, derived = "roberta.", _ENCODER_PREFIXES, ROBERTA_DERIVED_TENSORS
    elif model_type == "electra":
        prefix, encoder, derived = (
            "electra.",
            ("embeddings.", "encoder.", "embeddings_project."),
            ELECTRA_DERIVED_TENSORS,
        )
    else:
        prefix, encoder, derived = "bert.", _ENCODER_PREFIXES, DERIVED_HF_TENSORS
    parts = {hf.split(PART)[0]: int(hf.rsplit("/", 1)[1]) for _, hf, _ in rows if PART in hf}
    tensors = _split_parts(
        {f"{prefix}{k}" if k.startswith(encoder) else k: v for k, v in tensors.items()}, parts, where
    )
    flat = {}
    for name, value in tensors.items():
        if name in derived:
            continue
        if name not in by_hf:
            raise CheckpointError(f"{where}: unknown tensor {name}")
        ours, kind = by_hf[name]
        value = np.asarray(value)
        shape = _our_shape(ours, kind, value.shape, config)
        if tuple(value.shape) != _hf_shape(shape, kind):
            raise CheckpointError(
                f"{where}: tensor {name} has shape {tuple(value.shape)}, expected {_hf_shape(shape, kind)}"
            )
        flat[ours] = value.reshape(shape) if kind in ("copy", "flatten") else value.T.reshape(shape)
    return flat


def params_to_hf(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """HF tensors from a bertjax parameter tree (BertForPreTraining, BertModel under `bert`, ...)."""
    return flat_to_hf(flatten(params), config)


def params_from_hf(tensors: Mapping[str, np.ndarray], config: ModelConfig) -> dict[str, Any]:
    """A bertjax parameter tree from HF tensors (whichever heads they hold)."""
    return unflatten(hf_to_flat(tensors, config))
