"""The mapping between bertjax parameters and Hugging Face BERT state dicts (torch layout).

`params_to_hf` and `params_from_hf` convert a `BertForPreTraining` parameter tree to and from
the tensor names of transformers' `BertForPreTraining` (numpy arrays, any float dtype). A wrong
shape or an unknown tensor name raises `CheckpointError`; it is never skipped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from bertjax.config import ModelConfig
from bertjax.errors import CheckpointError


def _layer_norm(prefix: str, hf: str) -> list[tuple[str, str, str]]:
    return [(f"{prefix}/scale", f"{hf}.weight", "copy"), (f"{prefix}/bias", f"{hf}.bias", "copy")]


def _dense(prefix: str, hf: str, kind: str) -> list[tuple[str, str, str]]:
    bias_kind = "flatten" if kind == "qkv" else "copy"
    return [(f"{prefix}/kernel", f"{hf}.weight", kind), (f"{prefix}/bias", f"{hf}.bias", bias_kind)]


def name_map(config: ModelConfig) -> list[tuple[str, str, str]]:
    """(bertjax path, HF name, transform) for every tensor of BertForPreTraining."""
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
    return value.T  # dense: [in, out] -> [out, in]


def _from_hf(value: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind in ("copy", "flatten"):
        return value.reshape(shape)
    return value.T.reshape(shape)  # qkv, attn_out and dense: torch stores [out, in]


def params_to_hf(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """HF BertForPreTraining tensors (numpy) from a bertjax BertForPreTraining parameter tree."""
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    out = {}
    for ours, hf, kind in name_map(config):
        out[hf] = np.ascontiguousarray(_to_hf(flat[ours], kind))
    out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"]
    return out


def params_from_hf(
    tensors: Mapping[str, np.ndarray],
    config: ModelConfig,
    shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, Any]:
    """A bertjax parameter tree from HF tensors; `shapes` maps our paths to expected shapes."""
    tensors = dict(tensors)
    tensors.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings
    tensors.pop("cls.predictions.decoder.bias", None)  # tied to cls.predictions.bias
    tensors.pop("bert.embeddings.position_ids", None)  # a buffer, not a parameter
    flat = {}
    for ours, hf, kind in name_map(config):
        if hf not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {hf}")
        value = np.asarray(tensors.pop(hf))
        expected = tuple(shapes[ours])
        if _to_hf(np.zeros(expected, value.dtype), kind).shape != value.shape:
            want = _to_hf(np.zeros(expected, value.dtype), kind).shape
            raise CheckpointError(f"tensor {hf} has shape {tuple(value.shape)}, expected {want}")
        flat[tuple(ours.split("/"))] = _from_hf(value, kind, expected)
    if tensors:
        raise CheckpointError(f"unknown tensor {sorted(tensors)[0]} in checkpoint")
    return traverse_util.unflatten_dict(flat)
