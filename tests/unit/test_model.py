"""The Linen BERT against transformers' torch BertForPreTraining, and padding invariance."""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from bertjax.config import ModelConfig
from bertjax.model import ops
from bertjax.model.bert import BertForPreTraining, Projection
from bertjax.model.ops import Dropout, einsum, gelu, keep_mask, random_words
from bertjax.weights.hf_mapping import params_from_hf, params_to_hf
from bertjax.weights.param_tree import stack_layers, unstack_layers

CONFIG = ModelConfig(
    vocab_size=211,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=96,
    max_position_embeddings=40,
    type_vocab_size=2,
)


def _init(config: ModelConfig, batch: int = 2, length: int = 16, preds: int = 5, seed: int = 0):
    ids = jnp.ones((batch, length), jnp.int32)

    def init(key: jax.Array):  # compiled: eager initialisation takes seconds, op by op
        return BertForPreTraining(config).init(key, ids, ids * 0, ids, jnp.zeros((batch, preds), jnp.int32))

    return nn.meta.unbox(jax.jit(init)(jax.random.key(seed))["params"])


def _random_batch(rng: np.random.Generator, batch: int, length: int, preds: int, vocab: int):
    lengths = rng.integers(length // 2, length + 1, size=batch)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, vocab, size=(batch, length)) * mask
    types = (np.arange(length)[None, :] >= (lengths[:, None] // 2)).astype(np.int32) * mask
    positions = np.stack([rng.choice(n, size=preds, replace=False) for n in lengths]).astype(np.int32)
    return ids.astype(np.int32), types, mask, positions


def _random_torch_model(model_cls, config_cls, config: ModelConfig):
    """A transformers model of `config`'s shape with random weights everywhere, LayerNorms and
    biases included, so that no mapping error hides."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    fields += ("max_position_embeddings", "type_vocab_size", "layer_norm_eps")
    model = model_cls(config_cls(hidden_act="gelu", **{k: getattr(config, k) for k in fields})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def test_parity_with_torch_bert_for_pretraining():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_model = _random_torch_model(transformers.BertForPreTraining, transformers.BertConfig, CONFIG)
    tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    params = params_from_hf(tensors, CONFIG)
    ours = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(_init(CONFIG)).items()}
    assert {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()} == ours

    ids, types, mask, positions = _random_batch(np.random.default_rng(1), 3, 24, 6, CONFIG.vocab_size)
    mlm, nsp = BertForPreTraining(CONFIG).apply({"params": params}, ids, types, mask, positions)
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        )
    hf_mlm = np.take_along_axis(out.prediction_logits.numpy(), positions[..., None], axis=1)
    assert mlm.shape == hf_mlm.shape
    np.testing.assert_allclose(np.asarray(mlm), hf_mlm, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(nsp), out.seq_relationship_logits.numpy(), atol=1e-5, rtol=0)

    # And back: the HF names and tensors come out unchanged.
    back = params_to_hf(params, CONFIG)
    for name, value in tensors.items():
        if name in back:
            np.testing.assert_array_equal(back[name], value)


def test_padding_does_not_change_real_positions():
    params = _init(CONFIG)
    ids, types, mask, positions = _random_batch(np.random.default_rng(2), 2, 12, 3, CONFIG.vocab_size)
    mask[:] = 1
    padded = np.zeros((2, 20), np.int32)
    padded_ids, padded_types, padded_mask = padded.copy(), padded.copy(), padded.copy()
    padded_ids[:, :12] = ids
    padded_ids[:, 12:] = 7  # garbage that the mask must hide
    padded_types[:, :12] = types
    padded_mask[:, :12] = 1
    model = BertForPreTraining(CONFIG)
    mlm_a, nsp_a = jax.jit(model.apply)({"params": params}, ids, types, mask, positions)
    mlm_b, nsp_b = jax.jit(model.apply)({"params": params}, padded_ids, padded_types, padded_mask, positions)
    np.testing.assert_allclose(mlm_a, mlm_b, atol=1e-5)
    np.testing.assert_allclose(nsp_a, nsp_b, atol=1e-5)
    # The mask matters: unmasked garbage changes the outputs.
    mlm_c, _ = jax.jit(model.apply)({"params": params}, padded_ids, padded_types, np.ones_like(padded_mask), positions)
    assert np.abs(np.asarray(mlm_c) - np.asarray(mlm_a)).max() > 1e-3
    # Nor does padding change the gradients: masked keys pass none back.
    weights = np.random.default_rng(3).normal(size=np.shape(mlm_a))

    def grads(ids, types, mask):
        return jax.jit(
            jax.grad(lambda p: (model.apply({"params": p}, ids, types, mask, positions)[0] * weights).sum())
        )(params)

    for got, want in zip(
        jax.tree.leaves(grads(padded_ids, padded_types, padded_mask)), jax.tree.leaves(grads(ids, types, mask))
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_param_count_matches_formula():
    params = _init(CONFIG)
    assert sum(x.size for x in jax.tree.leaves(params)) == CONFIG.num_params()


def test_every_parameter_has_logical_axes():
    ids = jnp.ones((1, 8), jnp.int32)
    abstract = jax.eval_shape(
        BertForPreTraining(CONFIG).init, jax.random.key(0), ids, ids, ids, jnp.zeros((1, 2), jnp.int32)
    )
    leaves = jax.tree.leaves(abstract["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == len(leaf.value.shape)


@pytest.mark.parametrize("shape", [(64, 2048), (64, 2047), (4, 3, 64, 64)])
def test_dropout_keep_mask_rate_and_independence(shape):
    keep = np.asarray(keep_mask(jax.random.key(3), 0.1, shape)).reshape(shape[0], -1)
    n, bound = keep.size, 5 / np.sqrt(keep.size)
    # Kept fraction within 5 standard deviations of 0.9.
    assert abs(keep.mean() - 0.9) < 5 * np.sqrt(0.09 / n)

    def uncorrelated(a: np.ndarray, b: np.ndarray) -> None:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size)

    # Neighbours (the two halves of one 32-bit word, and neighbouring words), rows, and the same
    # positions under another key are uncorrelated, also shifted by a few positions.
    uncorrelated(keep[:, 0:-1:2], keep[:, 1::2][:, : keep[:, 0:-1:2].shape[1]])
    uncorrelated(keep[:, :-2], keep[:, 2:])
    uncorrelated(keep[:-1], keep[1:])
    other = np.asarray(keep_mask(jax.random.key(4), 0.1, shape)).reshape(shape[0], -1)
    for shift in range(4):
        uncorrelated(keep[:, shift:], other[:, : keep.shape[1] - shift])
    assert bound < 0.03
    # The same key gives the same mask.
    np.testing.assert_array_equal(keep.reshape(shape), np.asarray(keep_mask(jax.random.key(3), 0.1, shape)))


def test_random_words_have_uniform_bits():
    words = np.asarray(random_words(jax.random.key(0), (256, 4096)))
    bits = (words[..., None] >> np.arange(32, dtype=np.uint32)) & 1
    assert np.all(np.abs(bits.mean(axis=(0, 1)) - 0.5) < 5 * np.sqrt(0.25 / words.size))
    assert len(np.unique(words)) > 0.999 * words.size  # 2**20 draws from 2**32 values: ~128 repeats


def test_random_words_take_their_keys_from_the_key_not_from_another_prng_call():
    # A threefry call per dropout site is a loop XLA:CPU compiles at every site of every step.
    jaxpr = str(jax.make_jaxpr(lambda key: random_words(key, (4, 8)))(jax.random.key(0)))
    assert "threefry" not in jaxpr and "random_bits" not in jaxpr
    # Keys that differ in either word give unrelated words.
    words = [
        np.asarray(random_words(jax.random.wrap_key_data(np.array(d, np.uint32)), (64, 64)))
        for d in ([0, 3], [0, 4], [1, 3])
    ]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.mean(words[a] == words[b]) < 0.01
        assert abs(np.mean((words[a] ^ words[b]) & 1) - 0.5) < 0.05


def test_dropout_preserves_the_mean():
    x = jnp.ones((256, 512))
    y = np.asarray(Dropout(0.25).apply({}, x, False, rngs={"dropout": jax.random.key(0)}))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.01
    np.testing.assert_array_equal(Dropout(0.25).apply({}, x, True), x)


@pytest.mark.parametrize("spec", ["btd,dhk->bthk", "...i,io->...o", "...d,vd->...v"])
def test_mixed_precision_einsum_gradients_match_float32(spec):
    rng = np.random.default_rng(0)
    shapes = {
        "btd,dhk->bthk": ((2, 8, 32), (32, 4, 8)),
        "...i,io->...o": ((2, 8, 32), (32, 16)),
        "...d,vd->...v": ((2, 5, 32), (50, 32)),
    }[spec]
    x, w = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
    target = jnp.asarray(rng.normal(size=jnp.einsum(spec, x, w).shape), jnp.float32)

    def loss(x, w, dtype):
        return ((einsum(spec, x, w, dtype) - target) ** 2).sum()

    value32, grads32 = jax.value_and_grad(loss, argnums=(0, 1))(x, w, jnp.float32)
    value16, grads16 = jax.value_and_grad(loss, argnums=(0, 1))(x, w, jnp.bfloat16)
    assert grads16[0].dtype == jnp.float32 and grads16[1].dtype == jnp.float32
    assert abs(float(value16) - float(value32)) < 2e-2 * float(value32)
    for g16, g32 in zip(grads16, grads32):
        assert float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32)) < 2e-2


@pytest.mark.parametrize(
    "spec, shapes",
    [
        ("...i,io->...o", ((2, 8, 32), (32, 16))),
        ("...d,vd->...v", ((2, 5, 32), (50, 32))),  # the tied decoder: [vocab, hidden]
        ("btd,dhk->bthk", ((2, 8, 32), (32, 4, 8))),
        ("tbd,hdk->bthk", ((8, 2, 32), (4, 32, 8))),  # summed axes not leading, weight axes mixed
        ("i,io->o", ((32,), (32, 16))),  # nothing summed
    ],
)
def test_float32_einsum_gradients_equal_jnps(spec, shapes):
    """The CPU einsum's own VJP (the weight gradient as one flattened 2-D matmul) gives jnp.einsum's
    gradients."""
    rng = np.random.default_rng(0)
    x, w = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
    target = jnp.asarray(rng.normal(size=jnp.einsum(spec, x, w).shape), jnp.float32)

    def loss(x, w, product):
        return ((product(spec, x, w) - target) ** 2).sum()

    got = jax.grad(loss, argnums=(0, 1))(x, w, lambda *a: einsum(*a, jnp.float32))
    want = jax.grad(loss, argnums=(0, 1))(x, w, lambda *a: jnp.einsum(*a, precision="highest"))
    for g, r in zip(got, want):
        assert g.shape == r.shape and g.dtype == jnp.float32
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(jnp.abs(r).max()))


def test_dense_weight_gradients_read_the_activations_as_they_lie():
    """On the CPU no activation is copied transposed for a weight gradient: XLA's own transpose of
    the einsum hands YNNPACK a transposed copy of one operand (or reruns the GELU fusion transposed)."""
    x, w1, w2 = jnp.ones((2, 64, 32)), jnp.ones((32, 96)), jnp.ones((96, 32))

    def loss(w1, w2):
        h = gelu(einsum("...i,io->...o", x, w1, jnp.float32))
        return (einsum("...i,io->...o", h, w2, jnp.float32) ** 2).sum()

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w1, w2).compile().as_text()
    assert re.findall(r"f32\[96,128\]|f32\[32,128\]", hlo) == []  # [features, tokens]: transposed


def test_einsum_on_gpus_and_tpus_is_xlas_own_in_the_compute_dtype(monkeypatch):
    """Off the CPU `einsum` below float32 is jnp.einsum in that dtype (bf16 results, the matrix
    units accumulating in float32); the model's loss and gradients stay those of the CPU form."""

    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.normal(size=(2, 8, 32)), jnp.float32), jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
    config = dataclasses.replace(CONFIG, dtype="bfloat16", num_hidden_layers=1)
    batch = _random_batch(rng, 2, 16, 5, config.vocab_size)
    params = _init(config)
    assert einsum("...i,io->...o", x, w, jnp.bfloat16).dtype == jnp.float32  # the CPU form
    value_cpu, grads_cpu = jax.jit(lambda p: _value_and_grads(config, p, batch))(params)

    monkeypatch.setattr(ops, "native_low_precision_dots", lambda: True)
    out = einsum("...i,io->...o", x, w, jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(out, jnp.einsum("bti,io->bto", x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)))
    assert einsum("...i,io->...o", x, w, jnp.float32).dtype == jnp.float32
    value, grads = jax.jit(lambda p: _value_and_grads(config, p, batch))(params)  # traced anew: the XLA path
    assert abs(float(value) - float(value_cpu)) < 2e-2 * abs(float(value_cpu))
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_cpu)):
        assert got.dtype == jnp.float32  # the parameters' gradients stay float32
        assert float(jnp.linalg.norm(got - want)) <= 5e-2 * float(jnp.linalg.norm(want)) + 1e-6


def test_token_type_gradient_is_a_matmul_not_a_scatter():
    """The 2-row token-type table is read by a one-hot matmul: a gather's gradient would scatter
    every token into 2 rows (32-43 ms of a 110-123 ms BERT-base step on an H100)."""
    batch = _random_batch(np.random.default_rng(0), 2, 16, 5, CONFIG.vocab_size)
    params = _init(CONFIG)
    hlo = jax.jit(lambda p: _value_and_grads(CONFIG, p, batch)).lower(params).compile().as_text()
    scatters = re.findall(r"= \w+\[(\d+),64\]\{[^}]*\} scatter\(", hlo)
    assert str(CONFIG.vocab_size) in scatters  # the word embeddings' gradient: the pattern finds scatters
    assert str(CONFIG.type_vocab_size) not in scatters, scatters


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-10.0, 10.0, 20001)
    reference = 0.5 * x * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x])  # float64
    got = np.asarray(gelu(jnp.asarray(x, jnp.float32)), np.float64)
    assert np.abs(got - reference).max() < 2e-6  # the tanh approximation is 4.7e-4 away


@pytest.mark.parametrize("contracted", [1, 2])
def test_projection_as_a_flat_matmul_equals_the_einsum(contracted):
    """Projection multiplies flattened views; value and gradients equal the multi-axis einsum."""
    rng = np.random.default_rng(0)
    shape, axes, spec = {
        1: ((32, 4, 8), ("embed", "heads", "kv"), "btd,dhk->bthk"),
        2: ((4, 8, 32), ("heads", "kv", "embed"), "bthk,hkd->btd"),
    }[contracted]
    x = jnp.asarray(rng.normal(size=(2, 5, *shape[:contracted])), jnp.float32)
    module = Projection(CONFIG, shape, axes, contracted=contracted)
    params = nn.meta.unbox(module.init(jax.random.key(0), x)["params"])
    params["bias"] = jnp.asarray(rng.normal(size=params["bias"].shape), jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, 5, *shape[contracted:])), jnp.float32)

    def loss_flat(p, x):
        return ((module.apply({"params": p}, x) - target) ** 2).sum()

    def loss_einsum(p, x):
        return ((jnp.einsum(spec, x, p["kernel"]) + p["bias"] - target) ** 2).sum()

    (value, grads), (value_ref, grads_ref) = (
        jax.value_and_grad(f, argnums=(0, 1))(params, x) for f in (loss_flat, loss_einsum)
    )
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _value_and_grads(config: ModelConfig, params, batch, dropout: bool = True):
    ids, types, mask, positions = batch

    def loss(p):
        mlm, nsp = BertForPreTraining(config).apply(
            {"params": p}, ids, types, mask, positions, not dropout, rngs={"dropout": jax.random.key(1)}
        )
        return mlm.astype(jnp.float32).mean() + nsp.astype(jnp.float32).mean()

    return jax.jit(jax.value_and_grad(loss))(params)  # compiled: eager differentiation runs op by op


@pytest.mark.slow  # over 10 s: left out of make test-fast
def test_remat_gives_the_same_gradients():
    batch = _random_batch(np.random.default_rng(0), 2, 16, 5, CONFIG.vocab_size)
    params = _init(CONFIG)
    _, plain = _value_and_grads(CONFIG, params, batch)
    for remat in ("full", "dots"):
        _, recomputed = _value_and_grads(dataclasses.replace(CONFIG, remat=remat), params, batch)
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(recomputed)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _packed_batch(rng: np.random.Generator, config: ModelConfig):
    """Rows of one example, of two packed examples, and padding: every mask the encoder sees."""
    ids, types, mask, positions = _random_batch(rng, 3, 16, 5, config.vocab_size)
    mask[1] = np.where(np.arange(16) < 9, 1, 2) * (mask[1] > 0)  # two examples packed in one row
    return ids, types, mask, positions


@pytest.mark.slow  # over 10 s: left out of make test-fast
def test_dot_product_attention_equals_the_einsum_attention():
    """jax.nn.dot_product_attention (its XLA implementation, the cuDNN path's reference) under
    bertjax's padding and packing masks gives the einsum attention's loss and gradients
    (hidden dropout on; both without attention dropout)."""
    config = dataclasses.replace(CONFIG, attention_probs_dropout_prob=0.0)
    batch = _packed_batch(np.random.default_rng(0), config)
    params = _init(config)
    value, grads = _value_and_grads(config, params, batch)
    value_xla, grads_xla = _value_and_grads(dataclasses.replace(config, attention="xla"), params, batch)
    np.testing.assert_allclose(value_xla, value, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads_xla), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_attention_matches_the_einsum_attention_in_bfloat16():
    config = dataclasses.replace(
        CONFIG, hidden_size=256, num_attention_heads=4, intermediate_size=512, attention_probs_dropout_prob=0.0
    )
    config = dataclasses.replace(config, dtype="bfloat16")
    batch = _packed_batch(np.random.default_rng(0), config)
    params = _init(config)
    value, grads = _value_and_grads(config, params, batch, dropout=False)
    value_cudnn, grads_cudnn = _value_and_grads(dataclasses.replace(config, attention="cudnn"), params, batch, False)
    np.testing.assert_allclose(value_cudnn, value, rtol=1e-2)
    # Each leaf within 3% of its norm, measured against a floor of 1e-3 of the whole gradient's norm:
    # the key bias's gradient is zero in exact arithmetic (softmax ignores a constant added to every
    # score of a row), so both sides hold only rounding there (norms ~5e-7; seen on an H100).
    norm = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(grads)))
    for path, got, want in zip(
        jax.tree_util.tree_flatten_with_path(grads_cudnn)[0], *map(jax.tree.leaves, (grads_cudnn, grads))
    ):
        error = np.linalg.norm(np.asarray(got - want, np.float64))
        assert error < 3e-2 * max(np.linalg.norm(np.asarray(want, np.float64)), 1e-3 * norm), jax.tree_util.keystr(
            path[0]
        )


def test_attention_config_errors():
    from bertjax.config import model_config_from_dict
    from bertjax.errors import ConfigError

    with pytest.raises(ConfigError, match="model.attention='flash'"):
        model_config_from_dict({"attention": "flash"})
    with pytest.raises(ConfigError, match="attention_probs_dropout_prob=0"):
        model_config_from_dict({"attention": "xla"})
    with pytest.raises(ConfigError, match="needs model.dtype bfloat16"):
        model_config_from_dict({"attention": "cudnn", "attention_probs_dropout_prob": 0.0})
    assert model_config_from_dict({"attention": "cudnn", "attention_probs_dropout_prob": 0.0, "dtype": "bfloat16"})


def test_pre_layer_norm_encoder_equals_torch_roberta_prelayernorm():
    """model.layer_norm_position="pre" against transformers' RobertaPreLayerNormModel (a pre-LN
    BERT encoder: LayerNorm before attention and before the feed-forward, one after the last
    layer), given BERT's position ids; its weights are random, LayerNorms included."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.model.bert import BertModel
    from bertjax.weights.hf_mapping import hf_to_flat
    from bertjax.weights.param_tree import unflatten

    config = dataclasses.replace(CONFIG, layer_norm_position="pre")
    hf_model = _random_torch_model(
        transformers.RobertaPreLayerNormModel, transformers.RobertaPreLayerNormConfig, config
    )
    tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items() if "position_ids" not in k}
    final = {"scale": tensors.pop("LayerNorm.weight"), "bias": tensors.pop("LayerNorm.bias")}
    renamed = {}
    for name, value in tensors.items():  # its pre-LN LayerNorms under the names BERT's post-LN ones have
        name = name.replace(".attention.LayerNorm.", ".attention.output.LayerNorm.")
        renamed[name.replace(".intermediate.LayerNorm.", ".output.LayerNorm.")] = value
    flat = hf_to_flat(renamed, config)
    flat |= {f"bert/final_layer_norm/{k}": v for k, v in final.items()}
    params = unflatten(flat)["bert"]
    expected = BertModel(config).init(jax.random.key(0), *(jnp.ones((1, 8), jnp.int32),) * 3)["params"]
    ours = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(nn.meta.unbox(expected)).items()}
    assert {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()} == ours

    ids, types, mask, _ = _random_batch(np.random.default_rng(2), 3, 24, 6, config.vocab_size)
    sequence, pooled = BertModel(config).apply({"params": params}, ids, types, mask)
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.arange(ids.shape[1]).expand(ids.shape),
        )
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(sequence)[real], out.last_hidden_state.numpy()[real], atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=2e-5, rtol=0)
    # The same weights as a post-LN model give other outputs: the placement is what is tested.
    post = {k: v for k, v in params.items() if k != "final_layer_norm"}
    post_sequence, _ = BertModel(dataclasses.replace(config, layer_norm_position="post")).apply(
        {"params": post}, ids, types, mask
    )
    assert np.abs(np.asarray(post_sequence) - np.asarray(sequence))[real].max() > 0.1


def test_attention_in_batch_slices_equals_the_whole_batch_at_once():
    """model.attention_batch_chunks: attention over slices of the batch in turn (3 rows in 3 slices,
    and in 1 when 2 are asked for, which do not divide 3; every mask kind: one example, two packed
    examples, padding) gives the whole batch's loss and gradients without dropout; with dropout it
    runs, each slice drawing its own masks."""
    batch = _packed_batch(np.random.default_rng(4), CONFIG)
    params = _init(CONFIG)
    value, grads = _value_and_grads(CONFIG, params, batch, dropout=False)
    for chunks in (2, 3):
        config = dataclasses.replace(CONFIG, attention_batch_chunks=chunks)
        value_chunked, grads_chunked = _value_and_grads(config, params, batch, dropout=False)
        np.testing.assert_allclose(value_chunked, value, rtol=1e-6)
        for got, want in zip(jax.tree.leaves(grads_chunked), jax.tree.leaves(grads)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        value_dropout, _ = _value_and_grads(config, params, batch)
        assert np.isfinite(value_dropout) and value_dropout != value


def test_scanned_layers_equal_the_unrolled_layers():
    """model.scan_layers: the same parameters stacked along a layer axis (`stack_layers`) give the
    unrolled encoder's loss and gradients (without dropout: the scan draws each layer's masks
    from its own split key), with remat too; `unstack_layers` gives the unrolled parameters back.
    With dropout the scanned encoder runs too."""
    batch = _packed_batch(np.random.default_rng(0), CONFIG)
    params = _init(CONFIG)
    flat = traverse_util.flatten_dict(params, sep="/")
    stacked = traverse_util.unflatten_dict(stack_layers(flat, CONFIG.num_hidden_layers), sep="/")
    scanned_config = dataclasses.replace(CONFIG, scan_layers=True)
    assert jax.tree.structure(stacked) == jax.tree.structure(_init(scanned_config))
    assert stacked["bert"]["layers"]["intermediate"]["kernel"].shape == (3, 64, 96)
    value, grads = _value_and_grads(CONFIG, params, batch, dropout=False)
    for config in (scanned_config, dataclasses.replace(scanned_config, remat="full")):
        value_scanned, grads_scanned = _value_and_grads(config, stacked, batch, dropout=False)
        np.testing.assert_allclose(value_scanned, value, rtol=1e-6)
        got = unstack_layers(traverse_util.flatten_dict(jax.device_get(grads_scanned), sep="/"))
        want = traverse_util.flatten_dict(jax.device_get(grads), sep="/")
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)
    back = unstack_layers(stack_layers(flat, CONFIG.num_hidden_layers))
    assert back.keys() == flat.keys() and all(np.array_equal(back[k], flat[k]) for k in flat)
    value_dropout, _ = _value_and_grads(scanned_config, stacked, batch)
    assert np.isfinite(value_dropout) and value_dropout != value
