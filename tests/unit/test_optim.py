"""The optimizers against independent references: AdamW against torch.optim.AdamW (parameter
groups without decay, torch's global-norm clipping), LAMB against You et al.'s algorithm written
out in numpy, with biases and LayerNorm parameters excluded from weight decay and from the trust
ratio as the LAMB implementations used for BERT do; StableAdamW against torch-optimi's; the
warmup-stable-decay schedule by hand."""

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


def test_stable_adamw_matches_torch_optimi_with_update_clipping_per_layer():
    """StableAdamW against torch-optimi's (ModernBERT's optimizer, its plain per-tensor loop): biases
    and LayerNorm scales without weight decay, gradients that jump 30x at step 3 so that the
    RMS(g^2 / v) clip divides that step's rate, and a scanned encoder's stacked kernel whose two
    layers are clipped apart, as two tensors are in torch."""
    optimi = __import__("pytest").importorskip("optimi")
    rng = np.random.default_rng(3)
    shapes = {"dense": {"kernel": (6, 4), "bias": (4,)}, "norm": {"scale": (4,)}}
    params = {m: {n: rng.normal(size=s).astype(np.float32) for n, s in leaves.items()} for m, leaves in shapes.items()}
    params["bert"] = {"layers": {"kernel": rng.normal(size=(2, 5, 3)).astype(np.float32)}}
    grads = []
    for step in range(5):
        scale = 30.0 if step == 3 else 0.5
        g = jax.tree.map(lambda p, scale=scale: (scale * rng.normal(size=p.shape)).astype(np.float32), params)
        g["bert"]["layers"]["kernel"][1] *= 1e-3 if step == 3 else 1.0  # only layer 0 jumps
        grads.append(g)
    config = OptimConfig(
        optimizer="stable_adamw",
        learning_rate=0.02,
        b1=0.9,
        b2=0.99,
        eps=1e-6,
        weight_decay=0.1,
        schedule="constant",
        warmup_steps=0,
        clip_norm=0.0,
    )
    tx, _ = optim.make_optimizer(config, 100)
    ours, state, clipped = jax.tree.map(np.asarray, params), None, []
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(g, state, ours)
        ours = optax.apply_updates(ours, updates)
        nu = state[0].nu["bert"]["layers"]["kernel"]
        rms = np.sqrt(np.mean(np.square(g["bert"]["layers"]["kernel"]) / np.maximum(nu, 1e-12), axis=(1, 2)))
        clipped.append(rms > 1)

    def torch_tensors(tree):
        flat = {(m, n): v for m in ("dense", "norm") for n, v in tree[m].items()}
        flat.update({("layer", i): tree["bert"]["layers"]["kernel"][i] for i in range(2)})
        return flat

    tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in torch_tensors(params).items()}
    decayed = {("dense", "kernel"), ("layer", 0), ("layer", 1)}
    groups = [
        {"params": [t for k, t in tensors.items() if k in decayed], "weight_decay": config.weight_decay},
        {"params": [t for k, t in tensors.items() if k not in decayed], "weight_decay": 0.0},
    ]
    reference = optimi.StableAdamW(
        groups, lr=config.learning_rate, betas=(config.b1, config.b2), eps=config.eps, foreach=False, triton=False
    )
    for g in grads:
        for key, value in torch_tensors(g).items():
            tensors[key].grad = torch.tensor(value)
        reference.step()
    got = torch_tensors(jax.device_get(ours))
    for key, tensor in tensors.items():
        np.testing.assert_allclose(got[key], tensor.detach().numpy(), rtol=2e-5, atol=2e-6, err_msg=str(key))
    assert [bool(c[0]) for c in clipped] == [False, False, False, True, False] and not clipped[3][1]


def test_warmup_stable_decay_schedule_by_hand():
    """WSD over 100 steps: 10 of linear warmup, the peak until step 80, then 20 steps of decay to
    10% of the peak, in each of its shapes, at hand-computed points."""
    base = OptimConfig(
        learning_rate=1.0, warmup_steps=10, schedule="wsd", decay_fraction=0.2, final_learning_rate_fraction=0.1
    )
    expected = {
        "linear": {5: 0.5, 10: 1.0, 50: 1.0, 80: 1.0, 85: 1 - 0.9 * 0.25, 90: 0.55, 100: 0.1},
        "cosine": {5: 0.5, 80: 1.0, 85: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4)), 90: 0.55, 100: 0.1},
        "1-sqrt": {5: 0.5, 80: 1.0, 85: 0.1 + 0.9 * 0.5, 90: 0.1 + 0.9 * (1 - np.sqrt(0.5)), 100: 0.1},
    }
    for shape, points in expected.items():
        schedule = optim.learning_rate_schedule(dataclasses.replace(base, decay_shape=shape), 100)
        for step, rate in points.items():
            assert abs(float(schedule(step)) - rate) < 1e-6, (shape, step, float(schedule(step)), rate)


def test_cramming_budget_triangle_is_a_warmup_from_a_quarter_of_the_peak():
    """Cramming's budget-triangle2 at elapsed share x: peak x min(0.25 + x, 4 (1 - x)), i.e. a
    warmup from 25% of the peak over 75% of the schedule, then a linear decay to 0."""
    config = OptimConfig(learning_rate=1e-3, warmup_steps=0, warmup_fraction=0.75, initial_learning_rate_fraction=0.25)
    schedule = optim.learning_rate_schedule(config, 1000)
    for step in (0, 100, 500, 750, 800, 900, 1000):
        x = step / 1000
        assert abs(float(schedule(step)) - 1e-3 * min(0.25 + x, 4 * (1 - x))) < 1e-9, step
