"""Pretrained weights in and out: Hugging Face folders, bertjax model checkpoints, pretraining runs.

`load(path)` reads any of the three into a `Pretrained` (model config, flat parameters, tokenizer
file: `vocab.txt`, else `tokenizer.json`):

* a Hugging Face folder: `config.json` (model_type bert, modernbert, roberta or electra) and
  `model.safetensors` or `pytorch_model.bin`, with or without the pretraining heads;
* a bertjax model checkpoint (what `save` and `python -m bertjax.convert from-hf` write):
  `bertjax_model.json`, the parameters as an orbax checkpoint in `params/`, and the tokenizer;
* a pretraining or fine-tuning run directory (its `config.json` and the latest orbax checkpoint
  under `checkpoints/`), or one `checkpoints/<step>` directory of it.

`save` and `write_hf` write the first two formats, each into a temporary folder renamed into
place, and never over an existing folder. `merge` puts loaded parameters into a freshly
initialised model and says which parts were initialised fresh and which were left unused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bertjax.config import ModelConfig, model_config_from_dict
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.tokenizer import tokenizer_file
from bertjax.errors import BertjaxError, CheckpointError, DataError
from bertjax.weights import hf_mapping, param_tree, stored

MODEL_FILE = "bertjax_model.json"
FORMAT_VERSION = 1
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# HF BertConfig fields that are ours too (same names, same meaning).
HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
)


@dataclasses.dataclass
class Pretrained:
    """Weights read from a checkpoint, in our flat parameter paths."""

    config: ModelConfig
    params: dict[str, np.ndarray]  # 'bert/layer_0/attention/query/kernel' -> array
    vocab_file: Path | None  # the checkpoint's own tokenizer (vocab.txt or tokenizer.json), when it has one
    lowercase: bool
    kind: str  # "huggingface", "bertjax" or "run"
    path: Path
    labels: tuple[str, ...] = ()  # classifier label names, for a fine-tuned checkpoint
    # ELECTRA's generator (`generator/...`, `mlm_head/...`), for a run of train.objective="electra"
    generator_config: ModelConfig | None = None

    def groups(self) -> list[str]:
        return sorted({component(p) for p in self.params})


SHARED_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "layer_norm")


def electra_halves(pretrained: Pretrained) -> tuple[Pretrained, Pretrained]:
    """An ELECTRA run's discriminator (the encoder and `discriminator_head`) and generator (its
    layers and projection, the shared embedding tables, `mlm_head`), each as a model of its own
    under BERT's paths, as transformers' ElectraForPreTraining and ElectraForMaskedLM hold them."""
    assert pretrained.generator_config is not None
    params = pretrained.params
    discriminator = {p: v for p, v in params.items() if component(p) in ("encoder", "discriminator_head")}
    generator = {p: v for p, v in params.items() if p.startswith("mlm_head/")}
    generator |= {
        p: v for p, v in params.items() if p.startswith(tuple(f"bert/embeddings/{n}/" for n in SHARED_EMBEDDINGS))
    }
    generator |= {"bert/" + p.removeprefix("generator/"): v for p, v in params.items() if p.startswith("generator/")}
    generator = param_tree.unstack_layers(generator)
    halves = []
    for config, half in ((pretrained.config, discriminator), (pretrained.generator_config, generator)):
        config = dataclasses.replace(config, hf_model_type="electra", scan_layers=False)
        halves.append(dataclasses.replace(pretrained, config=config, params=half, generator_config=None))
    return halves[0], halves[1]


def component(path: str) -> str:
    """The part of the model a parameter belongs to: encoder, pooler, mlm_head, nsp_head, classifier,
    token_head (ModernBERT's per-token prediction head), token_classifier, qa_outputs."""
    if path.startswith("bert/pooler"):
        return "pooler"
    if path.startswith("bert/"):
        return "encoder"
    return path.split("/")[0]


# --------------------------------------------------------------------------------------------
# Reading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file: {e}") from None


def _rope_theta(hf_config: Mapping[str, Any], kind: str, default: float) -> float:
    """ModernBERT's RoPE base for "full_attention" or "sliding_attention" layers, from either of the
    layouts transformers has written (`rope_parameters` per layer type, or `global_rope_theta` /
    `local_rope_theta`)."""
    per_type = (hf_config.get("rope_parameters") or {}).get(kind) or {}
    flat = hf_config.get("global_rope_theta" if kind == "full_attention" else "local_rope_theta")
    return float(per_type.get("rope_theta", flat if flat is not None else default))


def modernbert_config_from_hf(hf_config: Mapping[str, Any], where: str) -> ModelConfig:
    """Our ModelConfig from an HF ModernBertConfig dict (ModernBERT's knobs: RoPE with a base per
    attention kind, GeGLU, pre-LN without layer 0's attention norm, sliding-window layers)."""
    layer_types = hf_config.get("layer_types")
    every = int(hf_config.get("global_attn_every_n_layers", 3))
    if layer_types:
        expected = ["sliding_attention" if i % every else "full_attention" for i in range(len(layer_types))]
        if list(layer_types) != expected:
            raise CheckpointError(f"{where}: layer_types other than a global layer every {every} are not supported")
    for key in ("hidden_activation", "classifier_activation"):
        if hf_config.get(key, "gelu") not in ("gelu", "gelu_new", "relu", "silu"):
            raise CheckpointError(f"{where}: {key} {hf_config[key]!r} is not supported")
    if hf_config.get("hidden_activation", "gelu") != hf_config.get("classifier_activation", "gelu"):
        raise CheckpointError(f"{where}: hidden_activation and classifier_activation differ")
    fields = {
        **{k: hf_config[k] for k in HF_FIELDS[:5] if k in hf_config},
        "max_position_embeddings": hf_config.get("max_position_embeddings", 8192),
        "hidden_act": hf_config.get("hidden_activation", "gelu"),
        "type_vocab_size": 0,
        "hidden_dropout_prob": float(hf_config.get("mlp_dropout", 0.0)),
        "attention_probs_dropout_prob": float(hf_config.get("attention_dropout", 0.0)),
        "initializer_range": hf_config.get("initializer_range", 0.02),
        "layer_norm_eps": hf_config.get("norm_eps", 1e-5),
        "layer_norm_position": "pre",
        "position_embedding_type": "rope",
        "global_rope_theta": _rope_theta(hf_config, "full_attention", 160000.0),
        "local_rope_theta": _rope_theta(hf_config, "sliding_attention", 10000.0),
        "local_attention": int(hf_config.get("local_attention", 128)),
        "global_attn_every_n_layers": every,
        "mlp_type": "glu",
        "norm_bias": bool(hf_config.get("norm_bias", False)),
        "attention_bias": bool(hf_config.get("attention_bias", False)),
        "mlp_bias": bool(hf_config.get("mlp_bias", False)),
        "head_bias": bool(hf_config.get("classifier_bias", False)),
        "decoder_bias": bool(hf_config.get("decoder_bias", True)),
        "first_attention_norm": False,
        "classifier_head": "prediction",
        "classifier_pooling": hf_config.get("classifier_pooling", "cls"),
    }
    try:
        return model_config_from_dict(fields, prefix=f"{where}: ")
    except BertjaxError as e:
        raise CheckpointError(str(e)) from None


def model_config_from_hf(hf_config: Mapping[str, Any], where: str) -> ModelConfig:
    """Our ModelConfig from an HF BertConfig (or ModernBertConfig) dict; unsupported variants are a
    CheckpointError."""
    model_type = hf_config.get("model_type", "bert")
    if model_type == "modernbert":
        return modernbert_config_from_hf(hf_config, where)
    if model_type not in ("bert", "roberta", "electra"):
        raise CheckpointError(f"{where}: model_type {model_type!r} is not bert, roberta, electra or modernbert")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{where}: position_embedding_type {hf_config['position_embedding_type']!r} is not supported"
        )
    if hf_config.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "relu"):
        raise CheckpointError(f"{where}: hidden_act {hf_config['hidden_act']!r} is not supported")
    fields = {k: hf_config[k] for k in HF_FIELDS if k in hf_config}
    if model_type == "roberta":  # positions counted from the padding id + 1, as fairseq's
        fields["position_offset"] = int(hf_config.get("pad_token_id", 1)) + 1
    if model_type == "electra":
        fields["hf_model_type"] = "electra"
        fields["pooler_activation"] = "gelu"  # ElectraClassificationHead: dense, GELU, out_proj
        fields["embedding_size"] = int(hf_config.get("embedding_size", hf_config.get("hidden_size", 768)))
    try:
        return model_config_from_dict(fields, prefix=f"{where}: ")
    except BertjaxError as e:
        raise CheckpointError(str(e)) from None


def _read_hf_tensors(folder: Path) -> dict[str, np.ndarray]:
    safetensors_file, torch_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.numpy import load_file

        try:
            return load_file(str(safetensors_file))
        except Exception as e:
            raise CheckpointError(f"{safetensors_file} cannot be read: {e}") from None
    if torch_file.is_file():
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{torch_file} is a torch pickle: install torch to read it") from None
        state = torch.load(str(torch_file), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
    raise CheckpointError(f"{folder} has config.json but neither model.safetensors nor pytorch_model.bin")


def read_hf(folder: str | Path) -> Pretrained:
    """A Hugging Face BERT folder (config.json + model.safetensors or pytorch_model.bin)."""
    folder = Path(folder)
    hf_config = _read_json(folder / "config.json")
    config = model_config_from_hf(hf_config, str(folder / "config.json"))
    architecture = (hf_config.get("architectures") or [""])[0]
    params = hf_mapping.hf_to_flat(_read_hf_tensors(folder), config, str(folder), architecture)
    if not any(p.startswith("bert/embeddings") for p in params):
        raise CheckpointError(f"{folder} holds no BERT embeddings")
    tokenizer_config = folder / "tokenizer_config.json"
    lowercase = bool(_read_json(tokenizer_config).get("do_lower_case", True)) if tokenizer_config.is_file() else True
    labels: tuple[str, ...] = ()
    if "id2label" in hf_config and any(p.startswith(("classifier/", "token_classifier/")) for p in params):
        id2label = hf_config["id2label"]
        labels = tuple(str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(len(id2label)))
    return Pretrained(config, params, tokenizer_file(folder), lowercase, "huggingface", folder, labels)


def _restore_tree(directory: Path) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    target = _abstract_numpy(stored.saved_tree(directory))
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(directory.absolute(), target)


def _abstract_numpy(tree: Any) -> Any:
    """A restore target of plain numpy arrays (on the host, whatever mesh the checkpoint was saved on).

    (np.zeros does not touch its pages: this allocates nothing until orbax writes into it.)
    """
    if isinstance(tree, Mapping):
        return {k: _abstract_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):  # optimizer states are (named) tuples
        return [_abstract_numpy(v) for v in tree]
    if tree is None or not hasattr(tree, "shape"):
        return tree
    return np.zeros(tuple(tree.shape), np.dtype(tree.dtype))


def read_bertjax(folder: str | Path) -> Pretrained:
    folder = Path(folder)
    record = _read_json(folder / MODEL_FILE)
    if record.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{folder / MODEL_FILE}: unsupported format {record.get('format')!r}")
    config = model_config_from_dict(record["model"], prefix=f"{folder / MODEL_FILE}: model.")
    params = param_tree.unstack_layers(param_tree.flatten(_restore_tree(folder / "params")))
    return Pretrained(
        config,
        {k: np.asarray(v) for k, v in params.items()},
        tokenizer_file(folder),
        bool(record.get("lowercase", True)),
        "bertjax",
        folder,
        tuple(record.get("labels", ())),
    )


def read_run(path: str | Path) -> Pretrained:
    """The latest checkpoint of a run directory, or one `checkpoints/<step>` directory."""
    path = Path(path)
    if (path / "state").is_dir():  # checkpoints/<step>
        step_dir, run_dir = path, path.parent.parent
    else:
        steps = sorted(
            (int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit())
            if (path / "checkpoints").is_dir()
            else []
        )
        if not steps:
            raise CheckpointError(f"run directory {path} has no checkpoint")
        step_dir, run_dir = path / "checkpoints" / str(steps[-1]), path
    record = _read_json(run_dir / "config.json")
    run_config = record.get("config", {})
    config = model_config_from_dict(run_config["model"], prefix=f"{run_dir / 'config.json'}: model.")

    saved = stored.saved_tree(step_dir / "state")  # only the parameters are read, not the optimizer state
    state = stored.restore_subtrees(step_dir / "state", {"params": _abstract_numpy(saved["params"])})
    params = {k: np.asarray(v) for k, v in param_tree.unstack_layers(param_tree.flatten(state["params"])).items()}
    data = run_config.get("data", {})
    vocab = Path(data["vocab_file"]) if data.get("vocab_file") else None
    labels = tuple(record.get("labels", ()))
    generator = None
    train = run_config.get("train", {})
    if train.get("objective") == "electra":  # the discriminator is the model; its classifier ELECTRA's
        generator = config.electra_generator(float(train.get("generator_size", 0.25)))
        config = dataclasses.replace(config, hf_model_type="electra", pooler_activation="gelu")
    lowercase = bool(data.get("lowercase", True))
    return Pretrained(config, params, vocab, lowercase, "run", step_dir, labels, generator)


def load(path: str | Path) -> Pretrained:
    """Weights from a Hugging Face folder, a bertjax model checkpoint or a run directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if (path / MODEL_FILE).is_file():
        return read_bertjax(path)
    if (path / "state").is_dir() or (path / "checkpoints").is_dir():
        return read_run(path)
    if (path / "config.json").is_file():
        return read_hf(path)
    raise CheckpointError(
        f"{path} is not a checkpoint: expected a Hugging Face folder (config.json + model.safetensors), "
        f"a bertjax model checkpoint ({MODEL_FILE}) or a run directory (checkpoints/)"
    )


# --------------------------------------------------------------------------------------------
# Writing


def _write_folder(destination: Path, write: Any) -> Path:
    """Calls write(temporary_folder) and renames it to `destination`; never replaces anything."""
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise CheckpointError(f"{destination} already exists: choose a new destination")
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        write(temporary)
        if destination.exists():
            destination.rmdir()  # empty, checked above
        temporary.rename(destination)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return destination


def _copy_tokenizer_files(pretrained: Pretrained, folder: Path) -> None:
    sources = [pretrained.path / name for name in TOKENIZER_FILES if pretrained.kind != "run"]
    for source in sources:
        if source.is_file():
            shutil.copy(source, folder / source.name)
    vocab = pretrained.vocab_file
    name = "tokenizer.json" if vocab is not None and vocab.suffix == ".json" else "vocab.txt"
    if vocab is not None and not (folder / name).is_file():
        shutil.copy(vocab, folder / name)
    if not (folder / "tokenizer_config.json").is_file():
        tokenizer_config: dict[str, Any] = {"do_lower_case": pretrained.lowercase, "tokenizer_class": "BertTokenizer"}
        if name == "tokenizer.json":  # transformers reads it as it is; the special tokens by name
            assert vocab is not None
            tokenizer = tokenizer_lib.load_tokenizer(vocab)
            special = dataclasses.asdict(tokenizer_lib.special_ids(tokenizer, str(vocab)))
            tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast"}
            tokenizer_config |= {f"{role}_token": tokenizer.id_to_token(i) for role, i in special.items()}
        tokenizer_config["model_max_length"] = (
            pretrained.config.max_position_embeddings - pretrained.config.position_offset
        )
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def _this_process_only() -> Any:
    """Orbax options for a save that this process makes alone (a model checkpoint's host arrays,
    written by process 0 of a multi-host run while the others go on)."""
    import jax
    import orbax.checkpoint as ocp

    index = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})


def save(pretrained: Pretrained, destination: str | Path) -> Path:
    """A bertjax model checkpoint: bertjax_model.json, params/ (orbax), vocab and tokenizer files."""
    import orbax.checkpoint as ocp

    def write(folder: Path) -> None:
        record = {
            "format": FORMAT_VERSION,
            "model": dataclasses.asdict(pretrained.config),
            "lowercase": pretrained.lowercase,
            "labels": list(pretrained.labels),
            "components": pretrained.groups(),
            "converted_from": str(pretrained.path),
        }
        with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as checkpointer:
            checkpointer.save((folder / "params").absolute(), param_tree.unflatten(pretrained.params))
            checkpointer.wait_until_finished()
        _copy_tokenizer_files(pretrained, folder)
        (folder / MODEL_FILE).write_text(json.dumps(record, indent=2))

    return _write_folder(Path(destination), write)


def hf_architecture(groups: list[str]) -> str:
    if "classifier" in groups:
        return "BertForSequenceClassification"
    if "token_classifier" in groups:
        return hf_mapping.TOKEN_CLASSIFICATION
    if "qa_outputs" in groups:
        return "BertForQuestionAnswering"
    if "mlm_head" in groups and "nsp_head" in groups:
        return "BertForPreTraining"
    return "BertModel"


def write_hf(pretrained: Pretrained, destination: str | Path) -> Path:
    """A Hugging Face folder (config.json, model.safetensors, tokenizer files) that transformers loads.

    The architecture follows the parts present: BertForSequenceClassification, -TokenClassification
    or -QuestionAnswering with their heads, BertForPreTraining with both pretraining heads, else
    BertModel (names without `bert.`). An ELECTRA run gives two folders, `discriminator/`
    (ElectraForPreTraining) and `generator/` (ElectraForMaskedLM).
    """
    from safetensors.numpy import save_file

    if pretrained.generator_config is not None:  # an ELECTRA run: both halves, side by side

        def write_halves(folder: Path) -> None:
            for name, half in zip(("discriminator", "generator"), electra_halves(pretrained)):
                write_hf(half, folder / name)

        return _write_folder(Path(destination), write_halves)
    model_type = hf_mapping.hf_model_type(pretrained.config)
    if model_type in ("modernbert", "roberta", "electra"):
        return _write_mlm_encoder(pretrained, Path(destination), model_type)
    if model_type is None and pretrained.config.layer_norm_position != "post":
        raise CheckpointError(
            f"{pretrained.path} is a pre-LN model (model.layer_norm_position=pre), which Hugging Face's BERT "
            "(post-LN) cannot hold: keep it as a bertjax model checkpoint"
        )
    if model_type is None:
        raise CheckpointError(
            f"{pretrained.path}: its architecture (model.* knobs) is neither BERT's nor ModernBERT's, so no "
            "Hugging Face model holds it: keep it as a bertjax model checkpoint"
        )
    groups = pretrained.groups()
    architecture = hf_architecture(groups)
    tensors = hf_mapping.flat_to_hf(pretrained.params, pretrained.config)
    if architecture == "BertModel":
        tensors = {k.removeprefix("bert."): v for k, v in tensors.items() if k.startswith("bert.")}
    hf_config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": "bert",
        **{k: v for k, v in dataclasses.asdict(pretrained.config).items() if k in HF_FIELDS},
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": str(next(iter(tensors.values())).dtype),
    }
    hf_config |= _label_fields(pretrained)

    def write(folder: Path) -> None:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
        _copy_tokenizer_files(pretrained, folder)

    return _write_folder(Path(destination), write)


def _label_fields(pretrained: Pretrained) -> dict[str, Any]:
    """id2label and label2id of a classifier or tagger (and the classifier's problem_type)."""
    groups = pretrained.groups()
    head = next((g for g in ("classifier", "token_classifier") if g in groups), None)
    if head is None:
        return {}
    num_labels = pretrained.params[f"{head}/bias"].shape[0]
    labels = pretrained.labels or tuple(f"LABEL_{i}" for i in range(num_labels))
    fields: dict[str, Any] = {
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if head == "classifier":
        fields["problem_type"] = "regression" if num_labels == 1 else "single_label_classification"
    return fields


def _special_token_ids(pretrained: Pretrained) -> dict[str, int | None]:
    """The pad, cls, sep and mask ids of the checkpoint's own tokenizer (tokenizer.json or
    vocab.txt), for the HF config; None where it has none (or no tokenizer is known)."""
    ids: dict[str, int | None] = dict.fromkeys(("pad", "cls", "sep", "mask"))
    if pretrained.vocab_file is not None:
        try:
            special = tokenizer_lib.special_ids(tokenizer_lib.load_tokenizer(pretrained.vocab_file))
            ids = {role: getattr(special, role) for role in ids}
        except DataError:
            pass
    return {
        **{f"{role}_token_id": i for role, i in ids.items()},
        "bos_token_id": ids["cls"],
        "eos_token_id": ids["sep"],
    }


def _write_mlm_encoder(pretrained: Pretrained, destination: Path, model_type: str) -> Path:
    """A Hugging Face ModernBERT, RoBERTa or ELECTRA folder: <Model>ForMaskedLM with the MLM head
    (ELECTRA's generator), ElectraForPreTraining with the discriminator's head, else <Model>Model.
    A pretraining run's NSP head (and pooler, but for RoBERTa) is left out, as those models have
    none. A fine-tuned model is written as <Model>ForSequenceClassification (for ELECTRA, given
    ELECTRA's GELU in its pooler), -TokenClassification or -QuestionAnswering; other heads are
    refused."""
    from safetensors.numpy import save_file

    config, groups = pretrained.config, pretrained.groups()
    name = {"modernbert": "ModernBert", "roberta": "Roberta", "electra": "Electra"}[model_type]
    droppable = ("nsp_head",) if model_type == "roberta" else ("pooler", "nsp_head")
    if model_type in ("modernbert", "electra") and "classifier" in groups:
        droppable = ("nsp_head",)  # its pooler is the classifier's head
    if model_type == "electra" and "classifier" in groups and config.pooler_activation != "gelu":
        raise CheckpointError(
            f"{pretrained.path}: ElectraForSequenceClassification's head applies GELU, this classifier's pooler "
            f"{config.pooler_activation} (model.pooler_activation): keep it as a bertjax model checkpoint"
        )
    allowed = (
        "encoder",
        "mlm_head",
        "pooler",
        *droppable,
        *(("discriminator_head",) if model_type == "electra" else ()),
        "classifier",
        "token_classifier",
        "qa_outputs",
        *(("token_head",) if model_type == "modernbert" else ()),
    )
    heads = [g for g in groups if g not in allowed]
    if "mlm_head" in groups and "discriminator_head" in groups:
        heads = ["mlm_head", "discriminator_head"]  # a generator or a discriminator, not both
    if heads:
        raise CheckpointError(
            f"{pretrained.path}: a {name} model with {', '.join(heads)} has no Hugging Face form here (the encoder "
            "and the MLM head have): keep it as a bertjax model checkpoint"
        )
    left_out = [g for g in groups if g in droppable]
    if left_out:
        print(f"left out of the {name} folder: {', '.join(left_out)}", file=sys.stderr)
    params = {p: v for p, v in pretrained.params.items() if component(p) not in left_out}
    tensors = hf_mapping.flat_to_hf(params, config)
    architecture = f"{name}ForMaskedLM" if "mlm_head" in groups else f"{name}Model"
    if "discriminator_head" in groups:
        architecture = "ElectraForPreTraining"
    architecture = hf_mapping.hf_head_architecture(params, config) or architecture
    if architecture in ("RobertaForTokenClassification", "RobertaForQuestionAnswering"):
        tensors = {k: v for k, v in tensors.items() if not k.startswith("roberta.pooler.")}  # they have none
    if architecture.endswith("Model"):
        tensors = {
            k.split(".", 1)[1] if k.startswith(("model.", "roberta.", "electra.")) else k: v for k, v in tensors.items()
        }
    fields = _modernbert_fields(pretrained) if model_type == "modernbert" else _bert_like_fields(config, model_type)
    hf_config = {"architectures": [architecture], "model_type": model_type, **fields, **_label_fields(pretrained)}
    hf_config["torch_dtype"] = str(next(iter(tensors.values())).dtype)

    def write(folder: Path) -> None:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
        _copy_tokenizer_files(pretrained, folder)

    return _write_folder(destination, write)


def _bert_like_fields(config: ModelConfig, model_type: str) -> dict[str, Any]:
    """RobertaConfig fields (BERT's, with the padding id that gives the position offset) or
    ElectraConfig fields (BERT's, with the embedding size)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k in HF_FIELDS}
    fields["position_embedding_type"] = "absolute"
    if model_type == "roberta":
        fields["pad_token_id"] = config.position_offset - 1
    else:
        fields["embedding_size"] = config.embedding_width
        fields["pad_token_id"] = 0
    return fields


def _modernbert_fields(pretrained: Pretrained) -> dict[str, Any]:
    """ModernBertConfig fields of the model, with the tokenizer's special token ids."""
    config = pretrained.config
    return {
        **{k: getattr(config, k) for k in HF_FIELDS[:5]},
        "max_position_embeddings": config.max_position_embeddings,
        "hidden_activation": config.hidden_act,
        "classifier_activation": config.hidden_act,
        "initializer_range": config.initializer_range,
        "norm_eps": config.layer_norm_eps,
        "norm_bias": config.norm_bias,
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "classifier_bias": config.head_bias,
        "decoder_bias": config.decoder_bias,
        "local_attention": config.local_attention,
        "global_attn_every_n_layers": config.global_attn_every_n_layers if config.local_attention else 1,
        "global_rope_theta": config.global_rope_theta,
        "local_rope_theta": config.local_rope_theta,
        "mlp_dropout": config.hidden_dropout_prob,
        "attention_dropout": config.attention_probs_dropout_prob,
        "tie_word_embeddings": True,
        "classifier_pooling": config.classifier_pooling,
        **_special_token_ids(pretrained),
    }


# --------------------------------------------------------------------------------------------
# Initialising a model from a checkpoint

RUN_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dtype",
    "param_dtype",
    "remat",
    "attention",
    "attention_batch_chunks",
    "scan_layers",
)


def model_config_for_run(checkpoint: Pretrained, run_model: ModelConfig) -> ModelConfig:
    """The checkpoint's shape with the run's dropout, dtypes, rematerialisation and attention."""
    return dataclasses.replace(checkpoint.config, **{k: getattr(run_model, k) for k in RUN_FIELDS})


def check_vocab(checkpoint: Pretrained, vocab_size: int, vocab_file: str | Path) -> None:
    """Every token id of the tokenizer has a row in the checkpoint's embedding (which may have
    more: ModernBERT pads its table to a multiple of 64)."""
    if checkpoint.config.vocab_size < vocab_size:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} has vocab_size {checkpoint.config.vocab_size} but the vocab "
            f"{vocab_file} has {vocab_size} tokens"
        )


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What initialising from a checkpoint did."""

    loaded: tuple[str, ...]  # components taken from the checkpoint
    fresh: tuple[str, ...]  # components of the model the checkpoint lacks, initialised fresh
    unused: tuple[str, ...]  # components of the checkpoint the model has no use for

    def describe(self) -> str:
        parts = [f"loaded {', '.join(self.loaded)}"]
        if self.fresh:
            parts.append(f"initialised fresh: {', '.join(self.fresh)}")
        if self.unused:
            parts.append(f"not used: {', '.join(self.unused)}")
        return "; ".join(parts)


def merge(fresh: Mapping[str, Any], pretrained: Pretrained) -> tuple[dict[str, Any], LoadReport]:
    """`fresh` (flat path -> array) with every parameter the checkpoint has replaced by its value.

    The encoder must be complete and every shape must match; heads the checkpoint lacks stay
    fresh (reported), and its parts the model lacks are left out (reported).
    """
    where = f"checkpoint {pretrained.path}"
    out, fresh_parts, loaded_parts = {}, set(), set()
    for path, value in fresh.items():
        if path in pretrained.params:
            loaded = pretrained.params[path]
            if tuple(loaded.shape) != tuple(value.shape):
                raise CheckpointError(
                    f"{where}: parameter {path} has shape {tuple(loaded.shape)}, the model needs {tuple(value.shape)}"
                )
            out[path] = loaded
            loaded_parts.add(component(path))
        elif component(path) == "encoder":
            raise CheckpointError(f"{where} has no parameter {path}")
        else:
            out[path] = value
            fresh_parts.add(component(path))
    unused = {component(p) for p in pretrained.params if p not in fresh}
    return out, LoadReport(
        tuple(sorted(loaded_parts)), tuple(sorted(fresh_parts - loaded_parts)), tuple(sorted(unused))
    )
