"""The train step: gradient accumulation, loss weighting, optimizer masks and schedules."""

import dataclasses
import functools
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from bertjax import fileio
from bertjax.config import MeshConfig, ModelConfig, OptimConfig
from bertjax.model.bert import BertForPreTraining
from bertjax.parallel import sharding
from bertjax.training import checkpoints, optim, pretraining
from bertjax.training.state import TrainState, create_sharded_state
from bertjax.weights import stored

MODEL = ModelConfig(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _batch(rng, batch=8, length=16, preds=4):
    lengths = rng.integers(6, length + 1, size=batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    weights = np.ones((batch, preds), np.float32)
    weights[::3, -1] = 0  # some padded predictions
    return {
        "input_ids": (rng.integers(5, MODEL.vocab_size, (batch, length)) * mask).astype(np.int32),
        "token_type_ids": np.zeros((batch, length), np.int32),
        "attention_mask": mask,
        "masked_lm_positions": rng.integers(1, 6, (batch, preds)).astype(np.int32),
        "masked_lm_ids": rng.integers(5, MODEL.vocab_size, (batch, preds)).astype(np.int32),
        "masked_lm_weights": weights,
        "next_sentence_labels": rng.integers(0, 2, batch).astype(np.int32),
    }


OPTIM = OptimConfig(warmup_steps=2, learning_rate=1e-3)


def _setup(optim_config=OPTIM):
    model = BertForPreTraining(MODEL)
    tx, schedule = optim.make_optimizer(optim_config, 10)
    mesh = sharding.make_mesh(MeshConfig())
    state, _ = create_sharded_state(jax.random.key(0), pretraining.param_init(model, 16), tx, mesh, MeshConfig())
    return model, tx, schedule, state


def test_gradient_accumulation_equals_full_batch():
    model, tx, schedule, state = _setup()
    batch = _batch(np.random.default_rng(0))
    key = jax.random.key(1)

    def step(count):
        return jax.jit(
            lambda s, b: pretraining.train_step(
                s, b, key, model=model, tx=tx, schedule=schedule, grad_accum_steps=count
            )
        )

    full_state, full = step(1)(state, batch)
    acc_state, acc = step(4)(state, batch)
    for name in ("loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "grad_norm"):
        np.testing.assert_allclose(acc[name], full[name], rtol=2e-5, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), acc_state.params, full_state.params)


def test_loss_ignores_padded_predictions_and_matches_reference():
    model, tx, schedule, state = _setup()
    batch = _batch(np.random.default_rng(1))
    step = jax.jit(lambda s, b: pretraining.train_step(s, b, jax.random.key(0), model=model, tx=tx, schedule=schedule))
    _, metrics = step(state, batch)
    keys = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions")
    mlm_logits, nsp_logits = jax.jit(model.apply)({"params": state.params}, *(batch[k] for k in keys))
    log_probs = np.asarray(jax.nn.log_softmax(mlm_logits))
    nll = -np.take_along_axis(log_probs, batch["masked_lm_ids"][..., None], -1)[..., 0]
    w = batch["masked_lm_weights"]
    expected_mlm = (nll * w).sum() / w.sum()
    nsp_nll = -np.take_along_axis(
        np.asarray(jax.nn.log_softmax(nsp_logits)), batch["next_sentence_labels"][:, None], -1
    )
    np.testing.assert_allclose(metrics["mlm_loss"], expected_mlm, rtol=1e-5)
    np.testing.assert_allclose(metrics["nsp_loss"], nsp_nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], expected_mlm + nsp_nll.mean(), rtol=1e-5)


def test_dropout_changes_with_step_and_is_reproducible():
    model_config = dataclasses.replace(MODEL, hidden_dropout_prob=0.1)
    model = BertForPreTraining(model_config)
    tx, schedule = optim.make_optimizer(OptimConfig(), 10)
    mesh = sharding.make_mesh(MeshConfig())
    state, _ = create_sharded_state(jax.random.key(0), pretraining.param_init(model, 16), tx, mesh, MeshConfig())
    batch = _batch(np.random.default_rng(2))
    step = jax.jit(lambda s, b, r: pretraining.train_step(s, b, r, model=model, tx=tx, schedule=schedule))
    _, a = step(state, batch, jax.random.key(5))
    _, b = step(state, batch, jax.random.key(5))
    _, c = step(state.replace(step=state.step + 1), batch, jax.random.key(5))
    assert float(a["loss"]) == float(b["loss"]) and float(a["loss"]) != float(c["loss"])


def test_weight_decay_mask_and_schedules():
    _, _, _, state = _setup()
    mask = optim.decay_mask(state.params)
    assert mask["bert"]["layer_0"]["intermediate"]["kernel"] is True
    assert mask["bert"]["layer_0"]["intermediate"]["bias"] is False
    assert mask["bert"]["layer_0"]["output_layer_norm"]["scale"] is False
    assert mask["bert"]["embeddings"]["word_embeddings"]["embedding"] is True
    linear = optim.learning_rate_schedule(OptimConfig(learning_rate=1.0, warmup_steps=10), 110)
    np.testing.assert_allclose(
        [linear(0), linear(5), linear(10), linear(60), linear(110)], [0, 0.5, 1, 0.5, 0], atol=1e-6
    )
    cosine = optim.learning_rate_schedule(OptimConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine"), 110)
    np.testing.assert_allclose([cosine(10), cosine(60), cosine(110)], [1, 0.5, 0], atol=1e-6)
    constant = optim.learning_rate_schedule(OptimConfig(learning_rate=1.0, warmup_steps=10, schedule="constant"), 110)
    np.testing.assert_allclose([constant(5), constant(100)], [0.5, 1.0], atol=1e-6)
    # Decay to a fraction of the peak (Composer's alpha_f): linear to 0.02, cosine to 0.1.
    to_two = optim.learning_rate_schedule(
        OptimConfig(learning_rate=1.0, warmup_steps=10, final_learning_rate_fraction=0.02), 110
    )
    np.testing.assert_allclose([to_two(10), to_two(60), to_two(110)], [1, 0.51, 0.02], atol=1e-6)
    cosine_floor = OptimConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine", final_learning_rate_fraction=0.1)
    np.testing.assert_allclose(optim.learning_rate_schedule(cosine_floor, 110)(110), 0.1, atol=1e-6)
    # No exclusions: every parameter decays.
    everything = optim.decay_mask(state.params, excluded=())
    assert all(jax.tree.leaves(everything))


def test_failed_start_leaves_no_empty_checkpoint_directory(tmp_path):
    """The folders the failing run created and left empty go (checkpoints/ and an empty workdir
    above it); one that existed, or holds anything, stays; a run that does not fail keeps its own."""
    new = tmp_path / "new" / "checkpoints"
    with pytest.raises(RuntimeError), fileio.folders_removed_on_failure(new):
        new.mkdir(parents=True)
        raise RuntimeError("bad optimizer state")
    assert not (tmp_path / "new").exists()
    logged = tmp_path / "logged" / "checkpoints"
    with pytest.raises(RuntimeError), fileio.folders_removed_on_failure(logged):
        logged.mkdir(parents=True)
        (logged.parent / "config.json").write_text("{}")
        raise RuntimeError
    assert not logged.exists() and (logged.parent / "config.json").is_file()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError), fileio.folders_removed_on_failure(existing):
        raise RuntimeError
    assert existing.is_dir()
    saved = tmp_path / "saved"
    with pytest.raises(KeyboardInterrupt), fileio.folders_removed_on_failure(saved):
        (saved / "10").mkdir(parents=True)
        raise KeyboardInterrupt
    assert (saved / "10").is_dir()
    finished = tmp_path / "finished"
    with fileio.folders_removed_on_failure(finished):
        finished.mkdir()
    assert finished.is_dir()


def test_restore_subtrees_reads_only_the_named_parts(tmp_path):
    """A phase-2 start reads the first run's parameters (to the host) and its optimizer state (onto
    the mesh) each once: `restore_subtrees` returns just the named subtrees, with their values."""
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(0)
    saved = {
        "step": np.int32(4),
        "params": {"dense": {"kernel": rng.standard_normal((4, 3)).astype(np.float32)}},
        "opt_state": [{"mu": rng.standard_normal((4, 3)).astype(np.float32)}, np.int32(4)],
    }
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((tmp_path / "state").absolute(), saved)
    tree = stored.saved_tree(tmp_path / "state")
    assert tree["opt_state"][0]["mu"].shape == (4, 3)
    on_host = stored.restore_subtrees(tmp_path / "state", {"params": jax.tree.map(np.zeros_like, saved["params"])})
    assert list(on_host) == ["params"]
    np.testing.assert_array_equal(on_host["params"]["dense"]["kernel"], saved["params"]["dense"]["kernel"])
    mesh = sharding.make_mesh(MeshConfig())
    target = [
        {"mu": jax.ShapeDtypeStruct((4, 3), np.float32, sharding=sharding.replicated(mesh))},
        jax.ShapeDtypeStruct((), np.int32, sharding=sharding.replicated(mesh)),
    ]
    on_mesh = stored.restore_subtrees(tmp_path / "state", {"opt_state": target})
    assert list(on_mesh) == ["opt_state"] and isinstance(on_mesh["opt_state"][0]["mu"], jax.Array)
    np.testing.assert_array_equal(np.asarray(on_mesh["opt_state"][0]["mu"]), saved["opt_state"][0]["mu"])
    assert int(on_mesh["opt_state"][1]) == 4


def test_second_phase_continues_or_restarts_the_moments_count(tmp_path):
    """`restore_run_state` takes another run's LAMB moments; its count (Adam's bias correction)
    goes on, or with restart_count starts again at 0 (NVIDIA's phase 2) with the same moments.
    The schedule's count is the new run's either way."""
    tx, _ = optim.make_optimizer(OptimConfig(optimizer="lamb", learning_rate=1e-2, warmup_steps=1), 10)
    params = {"dense": {"kernel": jax.numpy.arange(6.0).reshape(2, 3), "bias": jax.numpy.ones(3)}}
    opt_state = tx.init(params)
    for shift in (0.0, 1.0, 2.0):
        grads = jax.tree.map(functools.partial(lambda s, p: jax.numpy.sin(p + s), shift), params)
        _, opt_state = tx.update(grads, opt_state, params)
    first = TrainState(step=jax.numpy.int32(3), params=params, opt_state=opt_state)
    manager = checkpoints.manager(tmp_path / "checkpoints", 2)
    checkpoints.save(manager, 3, first, {"step": 3})
    manager.wait_until_finished()
    manager.close()

    fresh = TrainState(step=jax.numpy.int32(0), params=params, opt_state=tx.init(params))

    def counts(state):
        leaves = jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
        return {jax.tree_util.keystr(path): int(v) for path, v in leaves if "count" in jax.tree_util.keystr(path)}

    def moments(state):
        return [np.asarray(x) for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0]

    continued = checkpoints.restore_run_state(tmp_path / "checkpoints" / "3", fresh)
    restarted = checkpoints.restore_run_state(tmp_path / "checkpoints" / "3", fresh, restart_count=True)
    assert sorted(counts(first).values()) == [3, 3] and sorted(counts(continued).values()) == [0, 3]
    assert sorted(counts(restarted).values()) == [0, 0]
    for ours, saved in zip(moments(restarted), moments(first)):
        np.testing.assert_array_equal(ours, saved)
    assert any(np.any(m != 0) for m in moments(restarted))


def test_a_folder_written_whole_yields_to_one_another_process_finished(tmp_path):
    """`folder_written_whole`: the filled folder is renamed into place; when another process has
    put a finished folder (with its marker) there first, that one stands and ours goes; a folder
    there without the marker is an error; no temporary folder stays behind either way."""
    final = tmp_path / "prepared"
    with fileio.folder_written_whole(final, "done") as folder:
        (folder / "done").write_text("ours")
    assert (final / "done").read_text() == "ours"
    with fileio.folder_written_whole(final, "done") as folder:  # another process finished first
        (folder / "done").write_text("later")
    assert (final / "done").read_text() == "ours"
    half = tmp_path / "half"
    (half / "part").mkdir(parents=True)  # someone's folder without the marker: not finished
    with pytest.raises(OSError), fileio.folder_written_whole(half, "done") as folder:
        (folder / "done").write_text("ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half", "prepared"]


def test_lamb_takes_a_scanned_encoders_trust_ratios_per_layer():
    """LAMB on stacked layer parameters (`bert/layers/...`, model.scan_layers) scales each layer's
    slice by its own trust ratio: the update equals the unrolled parameters' update, which a
    ratio over the whole stack (optax's scale_by_trust_ratio) does not."""
    from flax import traverse_util

    from bertjax.weights.param_tree import stack_layers, unstack_layers

    rng = np.random.default_rng(0)
    flat = {f"bert/layer_{i}/intermediate/kernel": rng.normal(size=(4, 3)) * (i + 1) for i in range(3)}
    flat |= {f"bert/layer_{i}/intermediate/bias": rng.normal(size=3) for i in range(3)}
    flat |= {f"bert/layer_{i}/attention/query/kernel": rng.normal(size=(4, 2, 3)) / (i + 1) for i in range(3)}
    flat |= {"cls/dense/kernel": rng.normal(size=(3, 2))}
    flat = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in flat.items()}
    grads = {k: jax.numpy.asarray(rng.normal(size=v.shape), jax.numpy.float32) for k, v in flat.items()}
    tx, _ = optim.make_optimizer(OptimConfig(optimizer="lamb", learning_rate=1e-2, warmup_steps=0), 10)

    def update(tx, flat_params, flat_grads):
        params, grads_tree = (traverse_util.unflatten_dict(t, sep="/") for t in (flat_params, flat_grads))
        updates, _ = tx.update(grads_tree, tx.init(params), params)
        return traverse_util.flatten_dict(updates, sep="/")

    unrolled = update(tx, flat, grads)
    stacked = unstack_layers(update(tx, stack_layers(flat, 3), stack_layers(grads, 3)))
    for key in unrolled:
        assert np.linalg.norm(unrolled[key]) > 0, key  # a real update (the schedule starts above 0)
        np.testing.assert_allclose(stacked[key], unrolled[key], rtol=1e-6, err_msg=key)
    with pytest.MonkeyPatch.context() as patch:  # one ratio over the whole stack instead
        patch.setattr(optim, "scale_by_trust_ratio_per_layer", optax.scale_by_trust_ratio)
        whole_stack, _ = optim.make_optimizer(OptimConfig(optimizer="lamb", learning_rate=1e-2, warmup_steps=0), 10)
    wrong = unstack_layers(update(whole_stack, stack_layers(flat, 3), stack_layers(grads, 3)))
    kernel = "bert/layer_0/intermediate/kernel"
    assert not np.allclose(wrong[kernel], unrolled[kernel], rtol=1e-2)


def test_resuming_with_another_scan_layers_is_a_one_line_error(tmp_path):
    """A run's checkpoint holds its encoder stacked or per layer; resuming it with the other
    model.scan_layers names the setting to use."""
    params = {"bert": {"layers": {"output": {"kernel": np.zeros((2, 3, 4), np.float32)}}}}
    manager = checkpoints.manager(tmp_path / "checkpoints", 2)
    checkpoints.save(manager, 5, TrainState(step=np.int32(5), params=params, opt_state=()), {"step": 5})
    manager.wait_until_finished()
    unrolled = {"bert": {f"layer_{i}": {"output": {"kernel": np.zeros((3, 4), np.float32)}} for i in range(2)}}
    with pytest.raises(checkpoints.CheckpointError, match=r"saved with model.scan_layers=True: resume with"):
        checkpoints.check_compatible(manager, 5, unrolled)
    checkpoints.check_compatible(manager, 5, params)  # the same layout: no error
    manager.close()


def test_logged_loss_is_the_optimised_one_without_nsp():
    """With train.nsp_weight=0 (the MLM-only recipes) the logged loss is the MLM loss that is
    optimised, not MLM + an untrained NSP loss; the NSP loss is still reported on its own."""
    model, tx, schedule, state = _setup()
    batch = _batch(np.random.default_rng(3))
    step = jax.jit(
        lambda s, b: pretraining.train_step(
            s, b, jax.random.key(0), model=model, tx=tx, schedule=schedule, nsp_weight=0.0
        )
    )
    _, metrics = step(state, batch)
    np.testing.assert_allclose(metrics["loss"], metrics["mlm_loss"], rtol=1e-6)
    assert float(metrics["nsp_loss"]) > 0.1
    sums = {
        k: np.float32(v)
        for k, v in {
            "mlm_loss": 6.0,
            "mlm_weight": 3.0,
            "mlm_correct": 1.0,
            "nsp_loss": 4.0,
            "nsp_count": 2.0,
            "nsp_correct": 1.0,
        }.items()
    }
    assert float(pretraining.summarise(sums, nsp_weight=0.0)["loss"]) == 2.0
    assert float(pretraining.summarise(sums)["loss"]) == 4.0
    sop = pretraining.summarise(sums, pair_task="sop")  # ALBERT's sentence order: the same head and loss
    assert float(sop["sop_accuracy"]) == 0.5 and float(sop["sop_loss"]) == 2.0 and "nsp_loss" not in sop


@pytest.mark.parametrize("scan_layers", [False, True])
def test_init_from_checkpoint_draws_missing_heads_as_a_fresh_state_does(tmp_path, scan_layers):
    """The checkpoint's encoder is taken as it is; the head it lacks gets exactly the values the
    whole model's fresh init gives it (same key), though only the head is computed."""
    from bertjax.model.bert import BertForQuestionAnswering
    from bertjax.training.state import abstract_sharded_state, init_from_checkpoint
    from bertjax.weights import pretrained
    from bertjax.weights.param_tree import flatten, unstack_layers

    config = dataclasses.replace(MODEL, scan_layers=scan_layers)
    model = BertForQuestionAnswering(config)
    dummy = np.zeros((1, 16), np.int32)

    def init(key):
        return model.init({"params": key}, dummy, dummy, dummy)["params"]

    tx, _ = optim.make_optimizer(OPTIM, 10)
    mesh, key = sharding.make_mesh(MeshConfig()), jax.random.key(3)
    fresh, _ = create_sharded_state(key, init, tx, mesh, MeshConfig())
    fresh_flat = unstack_layers(flatten(jax.device_get(fresh.params)))
    rng = np.random.default_rng(0)
    encoder = {p: rng.normal(size=v.shape).astype(np.float32) for p, v in fresh_flat.items() if p.startswith("bert/")}
    checkpoint = pretrained.Pretrained(MODEL, encoder, None, True, "bertjax", tmp_path)

    abstract, _ = abstract_sharded_state(key, init, tx, mesh, MeshConfig())
    state, report = init_from_checkpoint(key, init, abstract, checkpoint, tx, mesh, MeshConfig(), verbose=False)
    loaded = unstack_layers(flatten(jax.device_get(state.params)))
    assert report.fresh == ("qa_outputs",) and set(loaded) == set(fresh_flat)
    for path, value in loaded.items():
        expected = encoder[path] if path.startswith("bert/") else fresh_flat[path]
        np.testing.assert_array_equal(value, expected, err_msg=path)
    assert int(state.step) == 0 and not any(np.any(x) for x in jax.tree.leaves(state.opt_state))


def test_run_logs_do_not_import_torch(tmp_path):
    """tensorboardX imports torch whenever it is installed (~2 s and ~300 MB a run); a run's writer
    and plot leave it out. In a fresh process: the tests import torch themselves."""
    code = (
        "import sys, pathlib\n"
        "from bertjax.training.logs import Writer\n"
        f"w = Writer(pathlib.Path({str(tmp_path)!r}), True)\n"
        "w.write_scalars(1, 'train', {'loss': 1.0, 'mlm_accuracy': 0.5, 'nsp_accuracy': 0.5})\n"
        "w.plot_curves(); w.close()\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "curves.png").stat().st_size > 5_000
