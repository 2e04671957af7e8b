"""Tasks through the shared update: accumulation equals the full batch, the loss is the task's (the span
loss over each window's own tokens)."""

import jax
import numpy as np
import pytest
from test_training import MODEL

from bertjax.config import MeshConfig, OptimConfig, TaskConfig
from bertjax.data.labelled import TaskSpec
from bertjax.parallel import sharding
from bertjax.tasks.classification import ClassificationTask, RegressionTask
from bertjax.training import finetuning, optim, update
from bertjax.training.state import create_sharded_state


def _task(cls, kind: str):
    spec = TaskSpec(
        name="toy", kind=kind, labels=("a", "b", "c") if kind == "classification" else (), metrics=(), layouts={}
    )
    return cls(spec, train=None, evals={}, tests={})


def _batch(rng, rows=8, length=16, classes=3):
    lengths = rng.integers(4, length + 1, size=rows)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    weights = np.ones(rows, np.float32)
    weights[-3:] = 0  # padding rows of a last, short batch
    return {
        "input_ids": (rng.integers(5, MODEL.vocab_size, (rows, length)) * mask).astype(np.int32),
        "token_type_ids": np.zeros((rows, length), np.int32),
        "attention_mask": mask,
        "labels": rng.integers(0, classes, rows).astype(np.float32),
        "weights": weights,
    }


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_accumulated_fine_tuning_steps_equal_the_full_batch(kind):
    """The update splits the batch into microbatches normalised by the whole batch's real rows:
    loss, accuracy, gradient norm and the new parameters equal one full-batch step, and the loss
    is the task's (cross-entropy or squared error over the rows of weight 1)."""
    task = _task(ClassificationTask if kind == "classification" else RegressionTask, kind)
    model = task.model(MODEL)
    tx, schedule = optim.make_optimizer(OptimConfig(warmup_steps=2, learning_rate=1e-3), 10)
    ids = jax.numpy.zeros((1, 16), jax.numpy.int32)
    mesh = sharding.make_mesh(MeshConfig())
    init = lambda key: model.init({"params": key}, ids, ids, ids)["params"]  # noqa: E731
    state, _ = create_sharded_state(jax.random.key(0), init, tx, mesh, MeshConfig())
    batch = _batch(np.random.default_rng(0))

    def step(count):
        return jax.jit(
            lambda s, b: update.train_step(
                s,
                b,
                jax.random.key(1),
                objective=finetuning.objective(task, model),
                tx=tx,
                schedule=schedule,
                grad_accum_steps=count,
            )
        )

    full_state, full = step(1)(state, batch)
    acc_state, acc = step(4)(state, batch)
    logits = np.asarray(jax.jit(model.apply)({"params": state.params}, *(batch[k] for k in task.input_keys)))
    real = batch["weights"] == 1
    if kind == "classification":
        log_probs = np.asarray(jax.nn.log_softmax(logits))[real]
        expected = -log_probs[np.arange(real.sum()), batch["labels"][real].astype(int)].mean()
    else:
        expected = np.mean((logits[real, 0] - batch["labels"][real]) ** 2)
    np.testing.assert_allclose(full["loss"], expected, rtol=1e-5)
    for name in full:
        np.testing.assert_allclose(acc[name], full[name], rtol=2e-5, atol=1e-7, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), acc_state.params, full_state.params)


@pytest.mark.parametrize("accumulate, external_rate", [(1, False), (2, True)])
def test_update_apart_from_the_gradient_equals_the_one_jitted_step(accumulate, external_rate):
    """`compile_train_step(update_apart=True)` (the gradient and the update jitted apart, as the
    fine-tuning loop runs batches of several widths) gives the one jitted step's state and metrics,
    step after step, with accumulation and with an external schedule position; a non-finite
    gradient is dropped by both."""
    task = _task(ClassificationTask, "classification")
    model = task.model(MODEL)
    tx, schedule = optim.make_optimizer(
        OptimConfig(warmup_steps=2, learning_rate=1e-3), 10, external_rate=external_rate
    )
    ids = jax.numpy.zeros((1, 16), jax.numpy.int32)
    mesh = sharding.make_mesh(MeshConfig())
    init = lambda key: model.init({"params": key}, ids, ids, ids)["params"]  # noqa: E731
    state, shardings = create_sharded_state(jax.random.key(0), init, tx, mesh, MeshConfig())
    parts = (finetuning.objective(task, model), tx, schedule, shardings, mesh, accumulate, external_rate)
    one, apart = update.compile_train_step(*parts), update.compile_train_step(*parts, update_apart=True)
    assert hasattr(one, "lower") and not hasattr(apart, "lower")
    rng = np.random.default_rng(0)
    batches = [_batch(rng) for _ in range(3)]
    batches[1]["input_ids"][0, 0] = MODEL.vocab_size + 5  # out of range: gathers NaN, a non-finite step
    position = (jax.numpy.float32(3.0),) if external_rate else ()
    copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # noqa: E731  (the steps donate the state)
    state_one, state_apart = copy(state), copy(state)
    for index, batch in enumerate(batches):
        state_one, metrics_one = one(state_one, batch, jax.random.key(1), *position)
        state_apart, metrics_apart = apart(state_apart, batch, jax.random.key(1), *position)
        assert float(metrics_apart["nonfinite"]) == float(index == 1)
        for name in metrics_one:
            np.testing.assert_allclose(metrics_apart[name], metrics_one[name], rtol=1e-6, err_msg=name)
    assert int(state_apart.step) == 3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), state_apart, state_one)


@pytest.mark.parametrize("answer_positions", ["context", "window"])
def test_span_loss_softmax_over_its_candidates_however_far_the_batch_is_padded(answer_positions):
    from scipy.special import log_softmax

    from bertjax.tasks.qa import QuestionAnsweringTask

    rng = np.random.default_rng(0)
    lengths, width = np.array([7, 12, 5]), 32
    context_start, context_end = np.array([3, 4, 2]), np.array([5, 10, 3])  # before each window's last [SEP]
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
    logits = rng.normal(size=(3, width, 2)).astype(np.float32) * 3
    batch = {
        "attention_mask": mask,
        "start_positions": np.array([4, 0, 2]),
        "end_positions": np.array([5, 0, 3]),
        "context_start": context_start,
        "context_end": context_end,
        "weights": np.array([1.0, 1.0, 0.0], np.float32),
    }
    task = object.__new__(QuestionAnsweringTask)  # loss_sums reads only the task's config
    task.config = TaskConfig(name="squad", answer_positions=answer_positions)
    padded, _ = task.loss_sums(logits, batch)
    cut = {k: v[:, :12] if v.ndim == 2 else v for k, v in batch.items()}
    exact, _ = task.loss_sums(logits[:, :12], cut)
    # The definition: each window's softmax over [CLS] and its context tokens ("context") or over
    # all its tokens ("window"), start and end averaged, weighted.
    expected = 0.0
    for i in range(2):
        if answer_positions == "context":
            candidates = np.r_[0, context_start[i] : context_end[i] + 1]
        else:
            candidates = np.arange(lengths[i])
        real = logits[i, candidates]
        start = int(np.flatnonzero(candidates == batch["start_positions"][i])[0])
        end = int(np.flatnonzero(candidates == batch["end_positions"][i])[0])
        expected -= (log_softmax(real[:, 0])[start] + log_softmax(real[:, 1])[end]) / 2
    np.testing.assert_allclose(float(padded), expected, rtol=1e-5)
    np.testing.assert_allclose(float(exact), expected, rtol=1e-5)
