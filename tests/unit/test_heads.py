"""The token-classification and span heads against transformers' torch models: an HF checkpoint
imports with the same logits, and an export loads in transformers with no missing key."""

import json

import jax
import numpy as np
import pytest
from flax import linen as nn

from bertjax.model.bert import BertForQuestionAnswering, BertForTokenClassification
from bertjax.weights import param_tree, pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HF_CONFIG = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=24,
    type_vocab_size=2,
)
TAGS = ("B-LOC", "B-PER", "I-PER", "O", "S-ORG")
HEADS = {
    "tagging": (transformers.BertForTokenClassification, "token_classifier"),
    "qa": (transformers.BertForQuestionAnswering, "qa_outputs"),
}


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 120, (3, 16)).astype(np.int32)
    types = np.zeros_like(ids)
    types[:, 9:] = 1
    mask = np.ones_like(ids)
    mask[1, 12:] = 0
    return ids, types, mask


def _torch_logits(model, ids, types, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        )
    if hasattr(out, "start_logits"):
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
    return out.logits.numpy()


def _ours(kind, config, num_labels):
    return BertForTokenClassification(config, num_labels) if kind == "tagging" else BertForQuestionAnswering(config)


@pytest.mark.parametrize("kind", ["tagging", "qa"])
def test_hf_checkpoint_imports_with_the_same_logits(tmp_path, kind):
    cls, head = HEADS[kind]
    torch.manual_seed(0)
    labels = (
        dict(id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)}) if kind == "tagging" else {}
    )
    hf_config = transformers.BertConfig(**HF_CONFIG, **labels)
    model = cls(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp_path / "hf")
    loaded = pretrained.load(tmp_path / "hf")
    assert loaded.groups() == ["encoder", head]  # no pooler in either HF class
    if kind == "tagging":
        assert loaded.labels == TAGS
    params = param_tree.unflatten(loaded.params)
    ids, types, mask = _inputs()
    ours = np.asarray(_ours(kind, loaded.config, len(TAGS)).apply({"params": params}, ids, types, mask))
    np.testing.assert_allclose(ours, _torch_logits(model, ids, types, mask), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["tagging", "qa"])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, kind):
    cls, head = HEADS[kind]
    from bertjax.config import ModelConfig

    config = ModelConfig(**{k: v for k, v in HF_CONFIG.items()}, hidden_dropout_prob=0.0)
    ids, types, mask = _inputs(1)
    model = _ours(kind, config, len(TAGS))
    params = nn.meta.unbox(model.init(jax.random.key(3), ids, types, mask)["params"])
    flat = param_tree.flatten(jax.tree.map(np.asarray, params))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]))
    labels = TAGS if kind == "tagging" else ()
    checkpoint = pretrained.Pretrained(config, flat, vocab, True, "bertjax", tmp_path, labels)
    folder = pretrained.write_hf(checkpoint, tmp_path / "hf")
    hf_config = json.loads((folder / "config.json").read_text())
    assert hf_config["architectures"] == [cls.__name__]
    reloaded, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    if kind == "tagging":
        assert reloaded.config.id2label == dict(enumerate(TAGS))
    theirs = _torch_logits(reloaded.eval(), ids, types, mask)
    ours = np.asarray(model.apply({"params": params}, ids, types, mask))
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-5)
    # And back: the export reads as the same parameters.
    again = pretrained.load(folder)
    assert again.groups() == ["encoder", head]
    assert all(np.array_equal(again.params[k], flat[k]) for k in flat)
