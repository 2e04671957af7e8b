"""The fine-tuning loop's batches: cut to their longest row without changing a logit."""

import numpy as np


def test_batches_cut_to_their_longest_row_give_the_same_logits():
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from bertjax.config import MeshConfig, ModelConfig
    from bertjax.model.bert import BertForSequenceClassification
    from bertjax.parallel import sharding
    from bertjax.tasks.base import INPUT_KEYS, Split
    from bertjax.training import finetuning

    rng = np.random.default_rng(0)
    n, length = 12, 128
    lengths = rng.integers(5, 40, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    features = {
        "input_ids": (rng.integers(5, 100, (n, length)) * mask).astype(np.int32),
        "token_type_ids": ((np.arange(length)[None] >= lengths[:, None] // 2) * mask).astype(np.int32),
        "attention_mask": mask,
        "labels": rng.integers(0, 2, n).astype(np.float32),
    }
    encoded = Split("test", features, examples=None, source="test")
    batch = finetuning.batch_of(encoded, np.arange(5), 8, multiple=32)
    assert batch["input_ids"].shape == (8, 32 if lengths[:5].max() <= 32 else 64)
    config = ModelConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = BertForSequenceClassification(config, 2)
    ids = jnp.ones((1, length), jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids, ids, ids)["params"])
    predict_fn = jax.jit(lambda p, b: model.apply({"params": p}, *(b[k] for k in INPUT_KEYS)))
    batch_sharding = sharding.batch_sharding(sharding.make_mesh(MeshConfig()))
    full = finetuning.predict(predict_fn, params, encoded, 4, batch_sharding, INPUT_KEYS)
    cut = finetuning.predict(predict_fn, params, encoded, 4, batch_sharding, INPUT_KEYS, pad_to_multiple_of=32)
    np.testing.assert_allclose(cut, full, atol=2e-6)
