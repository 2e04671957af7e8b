"""Modern encoder architectures (the ModelConfig knobs) against transformers' torch models."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from bertjax.config import ModelConfig
from bertjax.model.bert import BertForPreTraining, BertModel, attention_allowed, rotary_tables, rotate
from bertjax.weights import hf_mapping
from bertjax.weights.pretrained import model_config_from_hf

# A small ModernBERT: 4 layers (0 and 3 global, 1 and 2 sliding-window), a window of 8 tokens
# (4 either side) against rows of 24, and distinct RoPE bases per attention kind.
MODERNBERT = dict(
    vocab_size=211,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=64,
    local_attention=8,
    global_attn_every_n_layers=3,
    global_rope_theta=160000.0,
    local_rope_theta=10000.0,
    norm_eps=1e-5,
    pad_token_id=0,
    attn_implementation="eager",
)


def _modernbert(**overrides):
    """transformers' ModernBertForMaskedLM with random weights everywhere, norms and biases
    included, so that no mapping error hides."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.ModernBertConfig(**{**MODERNBERT, **overrides})
    model = transformers.ModernBertForMaskedLM(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("norm.weight") else 0.0))
    return model, hf_config


def _params(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict:
    """Our BertForPreTraining parameters: the mapped ones, and the pooler and NSP head (which
    ModernBERT has not) as initialised."""
    ids = jnp.ones((1, 8), jnp.int32)
    fresh = jax.jit(lambda k: BertForPreTraining(config).init(k, ids, ids * 0, ids, ids[:, :2]))(jax.random.key(0))
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(nn.meta.unbox(fresh["params"])).items()}
    mapped = hf_mapping.hf_to_flat(tensors, config, "test")
    assert set(mapped) == {p for p in flat if not p.startswith(("bert/pooler", "nsp_head"))}
    for path, value in mapped.items():
        assert value.shape == flat[path].shape, path
    flat.update(mapped)
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _assert_close(ours: np.ndarray, theirs: np.ndarray, tolerance: float = 1e-5, figure: str = "") -> None:
    """Equal to `tolerance`, relative to the largest value where values exceed 1 (float32 sums over
    a few layers of random weights). A `figure` prints the difference as a README parity row
    (`pytest -s`)."""
    scale = max(1.0, float(np.abs(theirs).max()))
    difference = float(np.abs(ours - theirs).max())
    if figure:
        print(f"\nparity | {figure} | max abs difference {difference:.1e} | largest value {scale:.1f}")
    assert difference <= tolerance * scale, (difference, scale)


def _batch(rng: np.random.Generator, batch: int, length: int, vocab: int, padded: bool):
    lengths = rng.integers(length // 2, length + 1, size=batch) if padded else np.full(batch, length)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(5, vocab, size=(batch, length)) * mask).astype(np.int32)
    return ids, mask


@pytest.mark.parametrize("biases", [False, True], ids=["modernbert-no-biases", "with-biases"])
@pytest.mark.parametrize("padded", [False, True], ids=["full-rows", "padded"])
def test_modernbert_equals_torch_modernbert_for_masked_lm(biases, padded):
    torch = pytest.importorskip("torch")
    bias_keys = ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias", "decoder_bias")
    hf_model, hf_config = _modernbert(**{k: biases for k in bias_keys[:-1]}, decoder_bias=True)
    config = model_config_from_hf(hf_config.to_dict(), "test")
    assert hf_mapping.hf_model_type(config) == "modernbert"
    assert [config.is_global_layer(i) for i in range(4)] == [True, False, False, True]
    tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    params = _params(config, tensors)

    ids, mask = _batch(np.random.default_rng(1), 3, 24, config.vocab_size, padded)
    positions = np.stack([np.arange(0, 24, 3)] * 3).astype(np.int32)  # spread over the row: every window
    mlm, _ = BertForPreTraining(config).apply({"params": params}, ids, ids * 0, mask, positions)
    hidden, _ = BertModel(config, add_pooling_layer=False).apply({"params": params["bert"]}, ids, ids * 0, mask)
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), output_hidden_states=True
        )
    theirs_hidden = out.hidden_states[-1].numpy()
    theirs_logits = np.take_along_axis(out.logits.numpy(), positions[..., None], axis=1)
    real = mask.astype(bool)
    rows = f"biases {biases}, padded {padded}"
    _assert_close(np.asarray(hidden)[real], theirs_hidden[real], figure=f"ModernBertForMaskedLM hidden, {rows}")
    keep = np.take_along_axis(mask, positions, axis=1).astype(bool)
    _assert_close(np.asarray(mlm)[keep], theirs_logits[keep], figure=f"ModernBertForMaskedLM logits, {rows}")


def test_modernbert_export_then_import_is_identical_and_loads_in_transformers():
    torch = pytest.importorskip("torch")
    hf_model, hf_config = _modernbert()
    config = model_config_from_hf(hf_config.to_dict(), "test")
    tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    flat = hf_mapping.hf_to_flat(tensors, config, "test")
    exported = hf_mapping.flat_to_hf(flat, config)
    assert set(exported) == set(tensors) - {"decoder.weight"}
    for name, value in exported.items():
        np.testing.assert_array_equal(value, tensors[name], err_msg=name)
    again = hf_mapping.hf_to_flat(exported, config, "test")
    assert set(again) == set(flat)
    for path in flat:
        np.testing.assert_array_equal(again[path], flat[path], err_msg=path)
    reloaded = type(hf_model)(hf_config)
    missing, unexpected = reloaded.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=False)
    assert unexpected == [] and missing == ["decoder.weight"]  # the decoder is the tied embedding table


def test_modernbert_base_model_names_without_the_model_prefix_are_read():
    hf_model, hf_config = _modernbert()
    config = model_config_from_hf(hf_config.to_dict(), "test")
    tensors = {k.removeprefix("model."): v.detach().numpy() for k, v in hf_model.model.state_dict().items()}
    flat = hf_mapping.hf_to_flat({k: v for k, v in tensors.items()}, config, "test")
    assert "bert/layer_1/attention/value/kernel" in flat and "mlm_head/bias" not in flat


def test_rope_rotates_pairs_by_position_times_frequency():
    """Against the paper's formula written out: pair (i, i + d/2) turned by position * theta^(-2i/d)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 2, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 7, 11]])
    out = np.asarray(rotate(jnp.asarray(x), rotary_tables(jnp.asarray(positions), 8, 100.0)))
    for t, p in enumerate(positions[0]):
        for i in range(4):
            angle = p * 100.0 ** (-2 * i / 8)
            a, b = x[0, t, :, i], x[0, t, :, i + 4]
            np.testing.assert_allclose(out[0, t, :, i], a * np.cos(angle) - b * np.sin(angle), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out[0, t, :, i + 4], b * np.cos(angle) + a * np.sin(angle), rtol=1e-5, atol=1e-6)


def test_sliding_window_keeps_segments_apart_and_reaches_half_the_window():
    segments = jnp.array([[1, 1, 1, 1, 1, 1, 2, 2, 2, 0]])
    allowed = np.asarray(attention_allowed(segments, window=4))[0, 0]
    assert allowed[0].tolist() == [True, True, True, False, False, False, False, False, False, False]
    assert allowed[5].tolist() == [False, False, False, True, True, True, False, False, False, False]
    assert allowed[6].tolist() == [False] * 6 + [True, True, True, False]


def _param_count(config: ModelConfig) -> int:
    """Parameters of BertForPreTraining of `config`, from its abstract initialisation."""
    ids = jnp.ones((1, 8), jnp.int32)
    init = lambda k: BertForPreTraining(config).init(k, ids, ids * 0, ids, ids[:, :2])  # noqa: E731
    shapes = jax.eval_shape(init, jax.random.key(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes["params"])))


def test_param_count_formula_holds_for_every_knob():
    for knobs in (
        {},
        dict(position_embedding_type="rope", mlp_type="glu", layer_norm_position="pre", first_attention_norm=False),
        dict(norm_bias=False, attention_bias=False, mlp_bias=False, head_bias=False, decoder_bias=False),
        dict(norm_type="rmsnorm", type_vocab_size=0, embedding_norm=False, position_embedding_type="none"),
        dict(embedding_size=16),
        dict(position_embedding_type="scaled_sinusoidal", norm_type="rmsnorm"),
        dict(classifier_head="prediction", head_bias=False, norm_bias=False),
        dict(head_transform=False, decoder_bias=False),
        dict(head_transform=False, tie_word_embeddings=False, norm_type="rmsnorm"),
        dict(embedding_size=16, tie_word_embeddings=False),
    ):
        config = ModelConfig(
            vocab_size=101, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40, **knobs
        )
        assert _param_count(config) == config.num_params(), knobs


def test_mlm_head_without_transform_decodes_the_hidden_state_tied_or_untied():
    """head_transform=False (NeoBERT, Cramming): logits = last hidden state x the word table (tied)
    + bias, or x a decoder kernel of its own (tie_word_embeddings=False); the hidden state is
    BertModel's, computed apart."""
    for tied in (True, False):
        config = ModelConfig(
            vocab_size=53, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            head_transform=False, tie_word_embeddings=tied, layer_norm_position="pre",
        )  # fmt: skip
        ids = jax.random.randint(jax.random.key(1), (2, 7), 0, 53)
        positions = jnp.array([[1, 3], [0, 6]])
        model = BertForPreTraining(config)
        params = model.init(jax.random.key(0), ids, ids * 0, ids * 0 + 1, positions)["params"]
        params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape), nn.meta.unbox(params))
        logits, _ = model.apply({"params": params}, ids, ids * 0, ids * 0 + 1, positions)
        hidden, _ = BertModel(config).apply({"params": params["bert"]}, ids, ids * 0, ids * 0 + 1)
        gathered = np.take_along_axis(np.asarray(hidden), np.asarray(positions)[..., None], axis=1)
        table = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
        decoder = table.T if tied else params["mlm_head"]["decoder"]["kernel"]
        expected = gathered @ np.asarray(decoder) + np.asarray(params["mlm_head"]["bias"])
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        assert "transform" not in params["mlm_head"] and ("decoder" in params["mlm_head"]) != tied


MODERNBERT_LAYERS = dict(
    layer_norm_position="pre", first_attention_norm=False, attention_bias=False, mlp_bias=False, mlp_type="glu"
)


@pytest.mark.parametrize(
    "knobs",
    [
        dict(local_attention=6, global_attn_every_n_layers=2, position_embedding_type="rope"),
        dict(local_attention=6, global_attn_every_n_layers=2, position_embedding_type="rope", **MODERNBERT_LAYERS),
        dict(local_attention=6, global_attn_every_n_layers=2, remat="full", **MODERNBERT_LAYERS),
    ],
)
def test_scanned_layers_alternate_attention_as_the_unrolled_layers(knobs):
    """A scanned encoder with sliding-window and global layers gives the unrolled encoder's
    outputs; ModernBERT's layer 0 (no attention norm) runs before the scan, which stacks layers 1
    and 2, and the stacked parameters unstack to the unrolled ones."""
    from bertjax.weights.param_tree import flatten, stack_layers, unflatten, unstack_layers

    config = ModelConfig(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=32,
        **knobs,
    )
    scanned = ModelConfig(**{**config.__dict__, "scan_layers": True})
    ids, mask = _batch(np.random.default_rng(2), 2, 20, 101, padded=True)
    params = jax.jit(lambda k: BertModel(config).init(k, ids, ids * 0, mask))(jax.random.key(0))["params"]
    params = nn.meta.unbox(params)
    unrolled, _ = jax.jit(BertModel(config).apply)({"params": params}, ids, ids * 0, mask)
    flat = flatten({"bert": params})
    stacked_flat = stack_layers(flat, config.num_hidden_layers - scanned.first_layer_apart)
    layers = unflatten(stacked_flat)["bert"]
    fresh = jax.eval_shape(lambda k: BertModel(scanned).init(k, ids, ids * 0, mask), jax.random.key(0))["params"]
    assert jax.tree.structure(nn.meta.unbox(fresh)) == jax.tree.structure(layers)
    assert ("layer_0" in layers) == scanned.first_layer_apart
    stacked, _ = jax.jit(BertModel(scanned).apply)({"params": layers}, ids, ids * 0, mask)
    np.testing.assert_allclose(np.asarray(stacked), np.asarray(unrolled), rtol=1e-5, atol=1e-5)
    back = unstack_layers(stacked_flat)
    assert back.keys() == flat.keys() and all(np.array_equal(back[k], flat[k]) for k in flat)


def test_modernbert_folder_written_by_write_hf_loads_in_transformers_and_reads_back(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.weights.pretrained import Pretrained, read_hf, write_hf

    hf_model, hf_config = _modernbert(norm_bias=True)
    config = model_config_from_hf(hf_config.to_dict(), "test")
    flat = hf_mapping.hf_to_flat({k: v.detach().numpy() for k, v in hf_model.state_dict().items()}, config, "test")
    folder = write_hf(Pretrained(config, flat, None, True, "bertjax", tmp_path / "ours"), tmp_path / "hf")
    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(
        folder, output_loading_info=True, attn_implementation="eager"
    )
    assert type(loaded).__name__ == "ModernBertForMaskedLM"
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    ids = torch.tensor(_batch(np.random.default_rng(3), 2, 20, config.vocab_size, padded=False)[0], dtype=torch.long)
    with torch.no_grad():
        np.testing.assert_allclose(
            loaded.eval()(input_ids=ids).logits.numpy(), hf_model(input_ids=ids).logits.numpy(), atol=1e-6
        )
    back = read_hf(folder)
    assert back.config == config
    assert set(back.params) == set(flat)
    for path, value in flat.items():
        np.testing.assert_array_equal(back.params[path], value, err_msg=path)


@pytest.mark.parametrize("size", ["base", "large"])
def test_modernbert_config_has_the_published_models_parameter_count(size):
    """configs/modernbert.py at the published sizes: as many parameters as transformers'
    ModernBertForMaskedLM of that size (149M and 395M with ModernBERT's 50,368-token vocab)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.config import load_config_module, model_config_from_dict

    cd = load_config_module("configs/modernbert.py").get_config(f"size={size}")
    config = model_config_from_dict(cd.model)
    shape = dict(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
    )
    with torch.device("meta"):
        hf_model = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**shape))
    theirs = sum(p.numel() for p in hf_model.parameters())
    h = config.hidden_size
    pooler_and_nsp = (h * h + h) + (2 * h + 2)  # our pretraining model's, which ModernBERT has not
    assert config.num_params() - pooler_and_nsp == theirs
    assert theirs // 10**6 == {"base": 149, "large": 395}[size]


def _roberta():
    """transformers' RobertaForMaskedLM (RoBERTa-base's layout: one token type, padding id 1, so
    positions from 2) with random weights everywhere."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    shape = {k: MODERNBERT[k] for k in ("vocab_size", "hidden_size", "num_attention_heads", "max_position_embeddings")}
    hf_config = transformers.RobertaConfig(
        **shape, num_hidden_layers=2, intermediate_size=96, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5
    )
    model = transformers.RobertaForMaskedLM(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(
                torch.randn_like(p) * 0.2 + (1.0 if "LayerNorm.weight" in name or "layer_norm.weight" in name else 0.0)
            )
    return model, hf_config


@pytest.mark.parametrize("padded", [False, True], ids=["full-rows", "padded"])
def test_roberta_equals_torch_roberta_for_masked_lm(padded):
    """Positions offset by the padding id + 1 (fairseq's), BERT's layers under RoBERTa's names."""
    torch = pytest.importorskip("torch")
    hf_model, hf_config = _roberta()
    config = model_config_from_hf(hf_config.to_dict() | {"model_type": "roberta"}, "test")
    assert hf_mapping.hf_model_type(config) == "roberta" and config.position_offset == 2
    params = _params(config, {k: v.detach().numpy() for k, v in hf_model.state_dict().items()})
    ids, mask = _batch(np.random.default_rng(4), 3, 24, config.vocab_size, padded)
    ids = np.where(mask > 0, ids, 1)  # RoBERTa's padding id: its positions come from the ids
    positions = np.stack([np.arange(0, 24, 3)] * 3).astype(np.int32)
    mlm, _ = BertForPreTraining(config).apply({"params": params}, ids, ids * 0, mask, positions)
    hidden, _ = BertModel(config, add_pooling_layer=False).apply({"params": params["bert"]}, ids, ids * 0, mask)
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), output_hidden_states=True
        )
    real = mask.astype(bool)
    figure = f"RobertaForMaskedLM {{}}, padded {padded}"
    _assert_close(np.asarray(hidden)[real], out.hidden_states[-1].numpy()[real], figure=figure.format("hidden"))
    keep = np.take_along_axis(mask, positions, axis=1).astype(bool)
    theirs = np.take_along_axis(out.logits.numpy(), positions[..., None], axis=1)
    _assert_close(np.asarray(mlm)[keep], theirs[keep], figure=figure.format("logits"))


def test_roberta_folder_written_by_write_hf_loads_in_transformers_and_reads_back(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.weights.pretrained import Pretrained, read_hf, write_hf

    hf_model, hf_config = _roberta()
    config = model_config_from_hf(hf_config.to_dict() | {"model_type": "roberta"}, "test")
    tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    flat = hf_mapping.hf_to_flat(tensors, config, "test")
    assert set(hf_mapping.flat_to_hf(flat, config)) == set(tensors) - set(hf_mapping.ROBERTA_DERIVED_TENSORS)
    folder = write_hf(Pretrained(config, flat, None, True, "bertjax", tmp_path / "ours"), tmp_path / "hf")
    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert type(loaded).__name__ == "RobertaForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = torch.tensor(_batch(np.random.default_rng(5), 2, 20, config.vocab_size, padded=False)[0], dtype=torch.long)
    with torch.no_grad():
        np.testing.assert_allclose(
            loaded.eval()(input_ids=ids).logits.numpy(), hf_model(input_ids=ids).logits.numpy(), atol=1e-6
        )
    back = read_hf(folder)
    assert back.config == config and set(back.params) == set(flat)
    for path, value in flat.items():
        np.testing.assert_array_equal(back.params[path], value, err_msg=path)


def _electra(kind: str):
    """transformers' ElectraForMaskedLM (`generator`) or ElectraForPreTraining (`discriminator`)
    with factorised embeddings (32 wide under a hidden size of 64), random weights everywhere."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    shape = {k: MODERNBERT[k] for k in ("vocab_size", "hidden_size", "num_attention_heads", "max_position_embeddings")}
    hf_config = transformers.ElectraConfig(**shape, embedding_size=32, num_hidden_layers=2, intermediate_size=96)
    cls = transformers.ElectraForMaskedLM if kind == "generator" else transformers.ElectraForPreTraining
    model = cls(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "LayerNorm.weight" in name else 0.0))
    return model, hf_config


@pytest.mark.parametrize("kind", ["generator", "discriminator"])
def test_electra_equals_torch_electra(kind, tmp_path):
    """Factorised embeddings projected to the hidden size; the generator's MLM logits, the
    discriminator's replaced-token logits (its head applied to our encoder's output by hand), and
    the folder `to-hf` writes loading in transformers with no missing or unexpected keys."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.weights.pretrained import Pretrained, read_hf, write_hf

    hf_model, hf_config = _electra(kind)
    config = model_config_from_hf(hf_config.to_dict() | {"model_type": "electra"}, "test")
    assert hf_mapping.hf_model_type(config) == "electra" and config.embedding_width == 32
    tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    flat = hf_mapping.hf_to_flat(tensors, config, "test")
    ids, mask = _batch(np.random.default_rng(6), 3, 24, config.vocab_size, padded=True)
    types = (np.arange(24)[None] >= 12).astype(np.int32) * mask
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    real = mask.astype(bool)
    encoder = {p: v for p, v in flat.items() if p.startswith("bert/")}
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in encoder.items()})["bert"]
    hidden, _ = BertModel(config, add_pooling_layer=False).apply({"params": params}, ids, types, mask)
    hidden = np.asarray(hidden)
    name = "ElectraForMaskedLM" if kind == "generator" else "ElectraForPreTraining"
    _assert_close(hidden[real], out.hidden_states[-1].numpy()[real], figure=f"{name} hidden")
    if kind == "generator":
        positions = np.stack([np.arange(0, 24, 3)] * 3).astype(np.int32)
        mlm, _ = BertForPreTraining(config).apply({"params": _params(config, tensors)}, ids, types, mask, positions)
        keep = np.take_along_axis(mask, positions, axis=1).astype(bool)
        theirs = np.take_along_axis(out.logits.numpy(), positions[..., None], axis=1)
        _assert_close(np.asarray(mlm)[keep], theirs[keep], figure=f"{name} logits")
    else:
        from bertjax.model.ops import gelu

        h = np.asarray(
            gelu(jnp.asarray(hidden @ flat["discriminator_head/dense/kernel"] + flat["discriminator_head/dense/bias"]))
        )
        logits = (h @ flat["discriminator_head/prediction/kernel"] + flat["discriminator_head/prediction/bias"])[..., 0]
        _assert_close(logits[real], out.logits.numpy()[real], figure=f"{name} logits")

    folder = write_hf(Pretrained(config, flat, None, True, "bertjax", tmp_path / "ours"), tmp_path / "hf")
    assert transformers.AutoConfig.from_pretrained(folder).architectures == [type(hf_model).__name__]
    _, info = type(hf_model).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    back = read_hf(folder)
    assert back.config == config and set(back.params) == set(flat)
    for path, value in flat.items():
        np.testing.assert_array_equal(back.params[path], value, err_msg=path)


BERT_SHAPE = dict(vocab_size=211, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)


def _torch_bert_encoder():
    """transformers' BertModel of BERT_SHAPE (40 positions, no pooler) with random weights, for
    the position kinds transformers lacks: each test writes its positions into the table."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**BERT_SHAPE, max_position_embeddings=40, attn_implementation="eager")
    hf_model = transformers.BertModel(hf_config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "LayerNorm.weight" in name else 0.0))
    return hf_model


def test_alibi_slopes_follow_the_paper():
    from bertjax.model.bert import alibi_slopes

    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    # 12 heads: the 8 slopes of 8 heads, then every other one of 16 heads' (2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5).
    assert np.allclose(alibi_slopes(12), [2.0**-i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)])


@pytest.mark.parametrize("attention", ["einsum", "xla"])
def test_alibi_encoder_equals_torch_bert_with_the_papers_bias(attention):
    """position_embedding_type="alibi" against transformers' BertModel without positions (its
    table zeroed) given the paper's bias, -slope_h * |i - j| with the slopes written out here
    (4 heads: 1/4, 1/16, 1/64, 1/256), added to its attention scores as a 4-D float mask."""
    torch = pytest.importorskip("torch")
    hf_model = _torch_bert_encoder()
    with torch.no_grad():
        hf_model.embeddings.position_embeddings.weight.zero_()
    config = ModelConfig(
        **BERT_SHAPE,
        position_embedding_type="alibi",
        attention=attention,
        attention_probs_dropout_prob=0.0 if attention == "xla" else 0.1,
    )
    tensors = {k: v.numpy() for k, v in hf_model.state_dict().items() if "position" not in k}
    params = hf_mapping.params_from_hf(tensors, config)["bert"]
    ids, mask = _batch(np.random.default_rng(7), 3, 24, 211, padded=True)
    types = np.zeros_like(ids)
    ours, _ = BertModel(config, add_pooling_layer=False).apply({"params": params}, ids, types, mask)

    slopes = np.array([1 / 4, 1 / 16, 1 / 64, 1 / 256])
    distance = np.abs(np.arange(24)[:, None] - np.arange(24)[None, :])
    bias = -slopes[:, None, None] * distance  # [heads, query, key]
    masked = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min)
    additive = torch.tensor((bias[None] + masked).astype(np.float32))
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=additive).last_hidden_state
    real = mask.astype(bool)
    _assert_close(np.asarray(ours)[real], theirs.numpy()[real], figure=f"ALiBi hidden, attention {attention}")


def test_scaled_sinusoidal_encoder_equals_torch_bert_with_the_papers_table():
    """position_embedding_type="scaled_sinusoidal" (Cramming) against transformers' BertModel whose
    position table holds the formula written out here, PE[p, 2k] = sin(p / 10000^(2k/d)),
    PE[p, 2k+1] = cos(p / 10000^(2k/d)), times the learned scale (set to 0.37, not its start)."""
    torch = pytest.importorskip("torch")
    hf_model = _torch_bert_encoder()
    position, k = np.arange(40)[:, None], np.arange(32)[None, :]
    table = np.zeros((40, 64))
    table[:, 0::2] = np.sin(position / 10000 ** (2 * k / 64))
    table[:, 1::2] = np.cos(position / 10000 ** (2 * k / 64))
    with torch.no_grad():
        hf_model.embeddings.position_embeddings.weight.copy_(torch.tensor(table * 0.37))
    config = ModelConfig(**BERT_SHAPE, position_embedding_type="scaled_sinusoidal")
    tensors = {k: v.numpy() for k, v in hf_model.state_dict().items() if "position" not in k}
    params = hf_mapping.params_from_hf(tensors, config)["bert"]
    params["embeddings"]["position_scale"] = np.float32(0.37)
    ids, mask = _batch(np.random.default_rng(7), 3, 24, 211, padded=True)
    ours, _ = BertModel(config, add_pooling_layer=False).apply({"params": params}, ids, np.zeros_like(ids), mask)
    with torch.no_grad():
        theirs = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
        ).last_hidden_state
    real = mask.astype(bool)
    _assert_close(np.asarray(ours)[real], theirs.numpy()[real], figure="scaled sinusoidal hidden")
    fresh = BertModel(config).init(jax.random.key(0), ids, ids * 0, mask)["params"]
    assert float(nn.meta.unbox(fresh)["embeddings"]["position_scale"]) == pytest.approx(64**-0.5)


@pytest.mark.parametrize(
    "model, kind",
    [
        ("Roberta", "SequenceClassification"),
        ("Roberta", "TokenClassification"),
        ("Roberta", "QuestionAnswering"),
        ("ModernBert", "SequenceClassification"),
        ("ModernBert", "TokenClassification"),
        ("ModernBert", "QuestionAnswering"),
        ("Electra", "SequenceClassification"),
        ("Electra", "TokenClassification"),
        ("Electra", "QuestionAnswering"),
    ],
)
def test_fine_tuning_heads_import_and_export_with_the_same_logits(model, kind, tmp_path):
    """transformers' RobertaFor<kind>, ModernBertFor<kind> and ElectraFor<kind> (random weights;
    ModernBERT's sequence classifier pooling the tokens' mean; ELECTRA's factorised embeddings):
    the folder imports with the same logits from our model of that task (RoBERTa's and ELECTRA's
    classification head = our pooler, with tanh or GELU, then classifier;
    ModernBERT's dense-activation-norm head = our pooler, or `token_head` before a token's or a
    span's classifier), and `write_hf` gives back a folder transformers loads with no missing or
    unexpected keys, with the same logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.model.bert import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
    from bertjax.weights import param_tree
    from bertjax.weights.pretrained import read_hf, write_hf

    hf_config = {
        "Roberta": lambda: _roberta()[1],
        "ModernBert": lambda: _modernbert(classifier_pooling="mean")[1],
        "Electra": lambda: _electra("discriminator")[1],
    }[model]()
    labels = ("neg", "neutral", "pos")
    if kind != "QuestionAnswering":  # its two outputs are the start and end logits
        hf_config.id2label, hf_config.label2id = dict(enumerate(labels)), {x: i for i, x in enumerate(labels)}
    torch.manual_seed(1)
    hf_model = getattr(transformers, f"{model}For{kind}")(hf_config).eval()
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith(("LayerNorm.weight", "norm.weight")) else 0.0))
    hf_model.save_pretrained(tmp_path / "theirs")
    loaded = read_hf(tmp_path / "theirs")
    head = {"SequenceClassification": "classifier", "TokenClassification": "token_classifier"}.get(kind, "qa_outputs")
    assert head in loaded.groups() and ("pooler" in loaded.groups()) == (kind == "SequenceClassification")
    ours = {
        "SequenceClassification": BertForSequenceClassification(loaded.config, 3),
        "TokenClassification": BertForTokenClassification(loaded.config, 3),
        "QuestionAnswering": BertForQuestionAnswering(loaded.config),
    }[kind]
    ids, mask = _batch(np.random.default_rng(6), 3, 20, hf_config.vocab_size, padded=True)
    ids = np.where(mask > 0, ids, hf_config.pad_token_id)
    logits = np.asarray(ours.apply({"params": param_tree.unflatten(loaded.params)}, ids, ids * 0, mask))

    def torch_logits(hf):
        with torch.no_grad():
            out = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
        if kind == "QuestionAnswering":
            return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
        return out.logits.numpy()

    real = mask.astype(bool) if kind != "SequenceClassification" else slice(None)
    _assert_close(logits[real], torch_logits(hf_model)[real], figure=f"{model}For{kind} logits")
    folder = write_hf(loaded, tmp_path / "ours")
    again, info = getattr(transformers, f"{model}For{kind}").from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert json.loads((folder / "config.json").read_text())["architectures"] == [f"{model}For{kind}"]
    _assert_close(torch_logits(again.eval())[real], torch_logits(hf_model)[real])
    if kind != "QuestionAnswering":
        assert again.config.id2label == dict(enumerate(labels))


@pytest.mark.slow  # over 10 s: left out of make test-fast
def test_splash_attention_equals_the_einsum_attention_with_segments_and_windows():
    """model.attention="splash" (the TPU kernel, interpreted on the CPU) against bertjax's own
    attention: a scanned encoder with sliding-window and global layers, RoPE, a row packed with two
    examples and padded, a padded row, 150 tokens (the kernel's rows are padded to 256): outputs
    and gradients of every parameter."""
    knobs = dict(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=200,
        attention_probs_dropout_prob=0.0,
        position_embedding_type="rope",
        local_attention=16,
        global_attn_every_n_layers=2,
        scan_layers=True,
    )
    ours, splash = ModelConfig(**knobs), ModelConfig(**knobs, attention="splash")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 101, (2, 150)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 60:], mask[0, 130:], mask[1, 90:] = 2, 0, 0
    params = jax.jit(lambda k: BertModel(ours).init(k, ids, ids * 0, mask))(jax.random.key(0))["params"]
    params = nn.meta.unbox(params)
    real = mask > 0

    def outputs(config):
        return jax.jit(BertModel(config).apply)({"params": params}, ids, ids * 0, mask)[0]

    def grads(config):
        loss = lambda p: (BertModel(config).apply({"params": p}, ids, ids * 0, mask)[0][real] ** 2).mean()  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    _assert_close(np.asarray(outputs(splash))[real], np.asarray(outputs(ours))[real])
    expected = traverse_util.flatten_dict(grads(ours))
    for path, value in traverse_util.flatten_dict(grads(splash)).items():
        _assert_close(np.asarray(value), np.asarray(expected[path]), 1e-4)
    from bertjax.config import ConfigError, model_config_from_dict

    with pytest.raises(ConfigError, match="attention='splash' takes no score bias"):
        model_config_from_dict(knobs | dict(position_embedding_type="alibi", attention="splash"))
