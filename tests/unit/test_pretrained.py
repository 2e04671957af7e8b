"""Checkpoint interop with Hugging Face: round trips, heads, errors, and real-weights parity."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from bertjax.config import ModelConfig
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import CheckpointError
from bertjax.model.bert import BertForPreTraining, BertModel
from bertjax.weights import hf_mapping, param_tree, pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]

HF_CONFIG = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=24,
    type_vocab_size=2,
)


def _random_hf(cls, tmp_path, name, seed=0):
    torch.manual_seed(seed)
    model = cls(transformers.BertConfig(**HF_CONFIG)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    folder = tmp_path / name
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)])
    )
    return model, folder


def _fresh_flat(config, model_cls=BertForPreTraining):
    ids = jnp.ones((1, 8), jnp.int32)
    args = (ids, ids, ids, jnp.zeros((1, 2), jnp.int32)) if model_cls is BertForPreTraining else (ids, ids, ids)
    params = nn.meta.unbox(model_cls(config).init(jax.random.key(0), *args)["params"])
    return param_tree.flatten(jax.tree.map(np.asarray, params))


def _state_dict(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_round_trip_hf_bertjax_hf_loads_with_no_missing_or_unexpected_keys(tmp_path):
    hf_model, folder = _random_hf(transformers.BertForPreTraining, tmp_path, "hf")
    ours = pretrained.save(pretrained.read_hf(folder), tmp_path / "ours")
    loaded = pretrained.load(ours)
    assert loaded.kind == "bertjax" and loaded.groups() == ["encoder", "mlm_head", "nsp_head", "pooler"]
    back = pretrained.write_hf(loaded, tmp_path / "back")
    assert json.loads((back / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    assert (back / "vocab.txt").read_text() == (folder / "vocab.txt").read_text()
    reloaded, info = transformers.BertForPreTraining.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    original = _state_dict(hf_model)
    for name, value in _state_dict(reloaded).items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)


def test_bert_model_without_prefix_and_missing_heads_are_reported(tmp_path):
    hf_model, folder = _random_hf(transformers.BertModel, tmp_path, "encoder_only")
    assert not any(k.startswith("bert.") for k in _state_dict(hf_model))
    checkpoint = pretrained.load(folder)
    assert checkpoint.groups() == ["encoder", "pooler"]
    fresh = _fresh_flat(checkpoint.config)
    merged, report = pretrained.merge(fresh, checkpoint)
    assert report.fresh == ("mlm_head", "nsp_head") and report.unused == ()
    assert "initialised fresh: mlm_head, nsp_head" in report.describe()
    np.testing.assert_array_equal(
        merged["bert/layer_1/attention/query/kernel"],
        hf_model.state_dict()["encoder.layer.1.attention.self.query.weight"].numpy().T.reshape(32, 4, 8),
    )
    np.testing.assert_array_equal(merged["nsp_head/kernel"], fresh["nsp_head/kernel"])
    # Exported back as a BertModel: names without the prefix, loads cleanly.
    back = pretrained.write_hf(checkpoint, tmp_path / "back")
    _, info = transformers.BertModel.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_pytorch_bin_is_read(tmp_path):
    hf_model, folder = _random_hf(transformers.BertForPreTraining, tmp_path, "hf")
    state = hf_model.state_dict()
    (folder / "model.safetensors").unlink()
    torch.save({k: v.clone() for k, v in state.items()}, folder / "pytorch_model.bin")
    checkpoint = pretrained.load(folder)
    np.testing.assert_array_equal(
        checkpoint.params["mlm_head/transform/kernel"], state["cls.predictions.transform.dense.weight"].numpy().T
    )


def test_wrong_shapes_and_unknown_tensors_are_errors(tmp_path):
    _, folder = _random_hf(transformers.BertForPreTraining, tmp_path, "hf")
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"intermediate.dense.(weight|bias) has shape \(48(, 32)?,?\), expected \(64(, 32)?,?\)"
    ):
        pretrained.load(folder)
    config_ok = pretrained.model_config_from_hf(HF_CONFIG, "x")
    with pytest.raises(CheckpointError, match="unknown tensor bert.encoder.layer.0.attention.self.rotary.weight"):
        hf_mapping.hf_to_flat({"bert.encoder.layer.0.attention.self.rotary.weight": np.zeros(3)}, config_ok)
    with pytest.raises(CheckpointError, match="model_type 'deberta-v2' is not bert, roberta, electra or modernbert"):
        pretrained.model_config_from_hf({**HF_CONFIG, "model_type": "deberta-v2"}, "x")
    # A model of another shape than the checkpoint: one-line error naming the parameter.
    _, good = _random_hf(transformers.BertForPreTraining, tmp_path, "good")
    other = ModelConfig(**{**HF_CONFIG, "hidden_size": 64})
    with pytest.raises(CheckpointError, match="has shape .* the model needs"):
        pretrained.merge(_fresh_flat(other), pretrained.load(good))
    # Never written over an existing folder.
    with pytest.raises(CheckpointError, match="already exists"):
        pretrained.write_hf(pretrained.load(good), good)
    # A pre-LN model has no Hugging Face BERT form: refused, nothing written.
    pre = ModelConfig(**HF_CONFIG, layer_norm_position="pre")
    pre_ln = pretrained.Pretrained(pre, _fresh_flat(pre), None, True, "bertjax", tmp_path / "pre")
    with pytest.raises(CheckpointError, match="pre-LN model"):
        pretrained.write_hf(pre_ln, tmp_path / "pre_hf")
    assert not (tmp_path / "pre_hf").exists()
    # It round-trips as a bertjax model checkpoint, its final LayerNorm included.
    loaded = pretrained.load(pretrained.save(pre_ln, tmp_path / "pre_bertjax"))
    assert loaded.config.layer_norm_position == "pre" and "bert/final_layer_norm/scale" in loaded.params


def _sentences(news_file: Path, count: int) -> list[str]:
    from bertjax.data.corpus import split_sentences

    lines = [line for line in news_file.read_text().splitlines() if line][:200]
    sentences = [s for line in lines for s in split_sentences(line)]
    rng = np.random.default_rng(0)
    picked = [sentences[i] for i in rng.choice(len(sentences), count - 6, replace=False)]
    odd = ["", "Café déjà vu!", "北京是中国的首都。", "x" * 150, "MiXeD CaSe", "a " * 200]
    return picked + odd


@pytest.mark.slow  # over 10 s: left out of make test-fast
def test_minilm_real_weights_parity_with_torch(sample_files, tmp_path):
    """all-MiniLM-L6-v2 through our importer equals transformers' BertModel (fp32, 1e-5)."""
    folder = sample_files["minilm"]
    checkpoint = pretrained.load(folder)
    assert checkpoint.config.hidden_size == 384 and checkpoint.config.num_hidden_layers == 6
    tokenizer = load_tokenizer(checkpoint.vocab_file, checkpoint.lowercase)
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding(length=128)
    texts = _sentences(sample_files["news"], 300)
    encodings = tokenizer.encode_batch(texts[:150]) + tokenizer.encode_batch(
        list(zip(texts[150:225], texts[225:300]))  # pairs too
    )
    ids = np.asarray([e.ids for e in encodings], np.int32)
    types = np.asarray([e.type_ids for e in encodings], np.int32)
    mask = np.asarray([e.attention_mask for e in encodings], np.int32)
    assert 10 < mask.sum(1).mean() < 120 and mask.sum(1).max() == 128  # varied lengths, some truncated

    params = param_tree.unflatten({k[len("bert/") :]: v for k, v in checkpoint.params.items()})
    model = BertModel(checkpoint.config)
    apply = jax.jit(lambda p, i, t, m: model.apply({"params": p}, i, t, m))
    reference = transformers.BertModel.from_pretrained(folder).eval()
    bf16_model = BertModel(dataclasses.replace(checkpoint.config, dtype="bfloat16"))
    apply_bf16 = jax.jit(lambda p, i, t, m: bf16_model.apply({"params": p}, i, t, m))
    worst_hidden = worst_pooled = bf16_hidden = bf16_pooled = 0.0
    for start in range(0, len(ids), 75):
        rows = slice(start, start + 75)
        hidden, pooled = apply(params, ids[rows], types[rows], mask[rows])
        hidden_bf16, pooled_bf16 = apply_bf16(params, ids[rows], types[rows], mask[rows])
        with torch.no_grad():
            out = reference(
                input_ids=torch.tensor(ids[rows], dtype=torch.long),
                token_type_ids=torch.tensor(types[rows], dtype=torch.long),
                attention_mask=torch.tensor(mask[rows], dtype=torch.long),
            )
        real = mask[rows].astype(bool)
        worst_hidden = max(worst_hidden, np.abs(np.asarray(hidden) - out.last_hidden_state.numpy())[real].max())
        worst_pooled = max(worst_pooled, np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max())
        bf16_error = np.abs(np.asarray(hidden_bf16, np.float32) - out.last_hidden_state.numpy())[real]
        bf16_hidden = max(bf16_hidden, bf16_error.max())
        bf16_pooled = max(bf16_pooled, np.abs(np.asarray(pooled_bf16, np.float32) - out.pooler_output.numpy()).max())
    print(f"MiniLM parity, max abs difference: fp32 hidden {worst_hidden:.2e}, pooled {worst_pooled:.2e}; ", end="")
    print(f"bf16 compute hidden {bf16_hidden:.2e}, pooled {bf16_pooled:.2e}")
    assert worst_hidden <= 1e-5 and worst_pooled <= 1e-5
    assert bf16_hidden < 0.1 and bf16_pooled < 0.01  # bf16 keeps 8 bits of mantissa: a loose sanity bound

    # Export back to HF and reload: identical tensors.
    back = pretrained.write_hf(checkpoint, tmp_path / "minilm_back")
    original = {k: v.numpy() for k, v in reference.state_dict().items()}
    reloaded, info = transformers.BertModel.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, value in reloaded.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), original[name], err_msg=name)
