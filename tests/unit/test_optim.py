"""The optimizers against independent references: AdamW against torch.optim.AdamW (parameter
groups without decay, torch's global-norm clipping), LAMB against You et al.'s algorithm written
out in numpy, with biases and LayerNorm parameters excluded from weight decay and from the trust
ratio as the LAMB implementations used for BERT do."""

import dataclasses

import jax
import numpy as np
import optax
import torch

from bertjax.config import OptimConfig
from bertjax.training import optim

SHAPES = {"dense": {"kernel": (6, 4), "bias": (4,)}, "attention_layer_norm": {"scale": (4,), "bias": (4,)}}
DECAYED = {("dense", "kernel")}
STEPS = 4


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {m: {n: rng.normal(size=s).astype(np.float32) for n, s in leaves.items()} for m, leaves in SHAPES.items()}
    # Large gradients, so that clipping at norm 1 scales them every step.
    grads = [
        {m: {n: (3 * rng.normal(size=s)).astype(np.float32) for n, s in leaves.items()} for m, leaves in SHAPES.items()}
        for _ in range(STEPS)
    ]
    return params, grads


def _flat(tree):
    return {(m, n): tree[m][n] for m in tree for n in tree[m]}


def _run_optax(config: OptimConfig, params, grads):
    tx, _ = optim.make_optimizer(config, 100)
    params = jax.tree.map(np.asarray, params)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return _flat(jax.device_get(params))


def _config(optimizer: str) -> OptimConfig:
    return OptimConfig(
        optimizer=optimizer, learning_rate=0.05, weight_decay=0.1, schedule="constant", warmup_steps=0, clip_norm=1.0
    )


def _run_torch_adamw(config: OptimConfig, params, grads, decayed) -> dict:
    """torch.optim.AdamW with torch's global-norm clipping; weight decay on the `decayed` keys."""
    tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in _flat(params).items()}
    groups = [
        {"params": [t for k, t in tensors.items() if k in decayed], "weight_decay": config.weight_decay},
        {"params": [t for k, t in tensors.items() if k not in decayed], "weight_decay": 0.0},
    ]
    torch_opt = torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.b1, config.b2), eps=config.eps)
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(_flat(g)[k])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), config.clip_norm)
        torch_opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


def test_adamw_matches_torch_adamw_with_no_decay_groups_and_clipping():
    params, grads = _problem()
    ours = _run_optax(_config("adamw"), params, grads)
    theirs = _run_torch_adamw(_config("adamw"), params, grads, DECAYED)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
    assert any(not np.allclose(ours[k], _flat(params)[k]) for k in ours)  # it moved


def test_adamw_with_no_exclusions_decays_every_parameter_like_torch():
    """exclude_from_weight_decay=() (the MosaicBERT recipe): every parameter decays."""
    params, grads = _problem(2)
    config = dataclasses.replace(_config("adamw"), exclude_from_weight_decay=())
    ours = _run_optax(config, params, grads)
    theirs = _run_torch_adamw(config, params, grads, set(_flat(params)))
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
    default = _run_optax(_config("adamw"), params, grads)  # the default leaves the bias undecayed
    assert not np.allclose(default[("dense", "bias")], ours[("dense", "bias")], atol=1e-5)


def test_lamb_matches_the_paper_with_bias_and_layer_norm_excluded():
    params, grads = _problem(1)
    ours = _run_optax(_config("lamb"), params, grads)

    config = _config("lamb")
    w = {k: v.astype(np.float64) for k, v in _flat(params).items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, g in enumerate(grads, start=1):
        g = {k: x.astype(np.float64) for k, x in _flat(g).items()}
        norm = np.sqrt(sum((x**2).sum() for x in g.values()))
        g = {k: x * min(1.0, config.clip_norm / norm) for k, x in g.items()}
        for k in w:
            m[k] = config.b1 * m[k] + (1 - config.b1) * g[k]
            v[k] = config.b2 * v[k] + (1 - config.b2) * g[k] ** 2
            step = (m[k] / (1 - config.b1**t)) / (np.sqrt(v[k] / (1 - config.b2**t)) + config.eps)
            ratio = 1.0
            if k in DECAYED:
                step = step + config.weight_decay * w[k]
                ratio = np.linalg.norm(w[k]) / np.linalg.norm(step)
            w[k] = w[k] - config.learning_rate * ratio * step
    for k in w:
        np.testing.assert_allclose(ours[k], w[k], rtol=1e-5, atol=1e-5, err_msg=str(k))  # float32 vs 64
    # optax.lamb alone (trust ratio on every parameter) differs on the excluded ones.
    plain = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.lamb(
            config.learning_rate,
            config.b1,
            config.b2,
            config.eps,
            weight_decay=config.weight_decay,
            mask=optim.decay_mask,
        ),
    )
    p = jax.tree.map(np.asarray, params)
    state = plain.init(p)
    for g in grads:
        updates, state = plain.update(g, state, p)
        p = optax.apply_updates(p, updates)
    plain_bias = _flat(jax.device_get(p))[("dense", "bias")]
    assert np.abs(plain_bias - w[("dense", "bias")]).max() > 1e-2


def test_adamw_without_bias_correction_is_google_bert_adam_weight_decay():
    """bias_correction=False (the bert recipe) against google-research/bert's
    AdamWeightDecayOptimizer written out: m / (sqrt(v) + eps) on the raw moments, plus the
    decoupled decay, times the learning rate; clipped first at global norm 1."""
    params, grads = _problem(3)
    config = dataclasses.replace(_config("adamw"), bias_correction=False)
    ours = _run_optax(config, params, grads)
    w = {k: v.astype(np.float64) for k, v in _flat(params).items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for g in grads:
        g = {k: x.astype(np.float64) for k, x in _flat(g).items()}
        norm = np.sqrt(sum((x**2).sum() for x in g.values()))
        for k in w:
            grad = g[k] * min(1.0, config.clip_norm / norm)
            m[k] = config.b1 * m[k] + (1 - config.b1) * grad
            v[k] = config.b2 * v[k] + (1 - config.b2) * grad**2
            update = m[k] / (np.sqrt(v[k]) + config.eps)
            if k in DECAYED:
                update = update + config.weight_decay * w[k]
            w[k] = w[k] - config.learning_rate * update
    for k in w:
        np.testing.assert_allclose(ours[k], w[k], rtol=1e-5, atol=1e-5, err_msg=str(k))
    corrected = _run_optax(_config("adamw"), params, grads)
    assert max(np.abs(corrected[k] - w[k]).max() for k in w) > 1e-2  # bias correction changes the steps


def test_clip_is_tf_clip_by_global_norm_and_one_scalar_multiply():
    """google-research/bert's tf.clip_by_global_norm: g * max / max(||g||, max); gradients under the
    norm pass bit for bit. As one scalar multiply, XLA folds it into Adam's moment updates instead
    of writing a clipped copy of every gradient: 3 parameter-sized arrays per parameter per step
    (mu, nu, the parameter), where optax's per-element select made 4."""
    grads = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) - 5.0}
    norm = float(np.sqrt(np.sum(np.square(grads["w"].astype(np.float64)))))
    clip = optim.clip_by_global_norm(2.0)
    clipped, _ = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(clipped["w"], grads["w"] * 2.0 / norm, rtol=1e-6)
    loose = optim.clip_by_global_norm(norm * 2)
    np.testing.assert_array_equal(loose.update(grads, loose.init(grads))[0]["w"], grads["w"])
    assert jax.tree.structure(clip.init(grads)) == jax.tree.structure(optax.clip_by_global_norm(2.0).init(grads))

    tx, _ = optim.make_optimizer(_config("adamw"), 100)
    params = {"w": np.ones((256, 512), np.float32)}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile().as_text()
    written = [line for line in hlo.splitlines() if " = f32[256,512]{1,0} fusion(" in line]
    assert len(written) == 3, written
