"""Pretraining: the MLM + NSP (or SOP) objective, held-out evaluation, and the pretraining loop.

The loop in `pretrain` is a few named steps: set up the model config and the data, the model and
its state (sharded at birth, resumed from the latest checkpoint or filled from `init`), then
train: step, log, evaluate, checkpoint, until done or stopped by a signal. The update, the log
window, checkpoints and the stop signal are the shared training core (`update`, `loop`,
`checkpoints`, `state`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from bertjax import config as config_lib
from bertjax import fileio
from bertjax.config import ModelConfig, PretrainConfig
from bertjax.data import pretraining as pretraining_data
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import ConfigError
from bertjax.model.bert import BertForPreTraining
from bertjax.model.electra import ElectraForPreTraining
from bertjax.parallel import distributed, sharding
from bertjax.training import checkpoints, electra, executables, logs, loop, optim, update
from bertjax.training.state import TrainState, abstract_sharded_state, fresh_state, init_from_checkpoint, run_keys
from bertjax.weights import pretrained

Batch = dict[str, jax.Array]

BATCH_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)


def param_init(model: nn.Module, seq_length: int) -> Callable[[jax.Array], Any]:
    """The model's init as a function of a key: fresh (boxed) parameters from dummy inputs."""

    def init(rng: jax.Array) -> Any:
        ids = jnp.zeros((1, seq_length), jnp.int32)
        return model.init({"params": rng}, ids, ids, ids, jnp.zeros((1, 1), jnp.int32))["params"]

    return init


def nsp_slot_weights(batch: Batch) -> jax.Array:
    """1/0 per next-sentence prediction: one per row, or the packed rows' `next_sentence_weights`."""
    if "next_sentence_weights" in batch:
        return batch["next_sentence_weights"]
    return jnp.ones(batch["next_sentence_labels"].shape, jnp.float32)


def losses(
    params: Any,
    batch: Batch,
    rng: jax.Array | None,
    denominators: tuple[jax.Array, jax.Array],
    *,
    model: nn.Module,
    nsp_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of one (micro)batch, normalised by the whole batch's (MLM, NSP) counts, and its metric sums."""
    deterministic = rng is None
    mlm_logits, nsp_logits = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        batch["masked_lm_positions"],
        deterministic=deterministic,
        next_sentence_positions=batch.get("next_sentence_positions"),
        rngs=None if deterministic else {"dropout": rng},
    )
    weights = batch["masked_lm_weights"]
    mlm_xent = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, batch["masked_lm_ids"]) * weights
    nsp_labels = batch["next_sentence_labels"]
    nsp_weights = nsp_slot_weights(batch)
    nsp_xent = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, nsp_labels) * nsp_weights
    sums = {
        "mlm_loss": mlm_xent.sum(),
        "mlm_correct": ((mlm_logits.argmax(-1) == batch["masked_lm_ids"]) * weights).sum(),
        "mlm_weight": weights.sum(),
        "nsp_loss": nsp_xent.sum(),
        "nsp_correct": ((nsp_logits.argmax(-1) == nsp_labels) * nsp_weights).sum(),
        "nsp_count": nsp_weights.sum(),
    }
    mlm_denominator, nsp_denominator = denominators
    loss = sums["mlm_loss"] / mlm_denominator + nsp_weight * sums["nsp_loss"] / nsp_denominator
    return loss, sums


def denominators(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """The whole batch's masked-token and next-sentence counts (at least 1)."""
    return jnp.maximum(batch["masked_lm_weights"].sum(), 1.0), jnp.maximum(nsp_slot_weights(batch).sum(), 1.0)


def summarise(sums: dict[str, Any], nsp_weight: float = 1.0, pair_task: str = "nsp") -> dict[str, Any]:
    """Means from summed metrics; `loss` is the optimised one, MLM + nsp_weight x the pairs' loss,
    which is named after their task (`nsp_accuracy`, or ALBERT's `sop_accuracy`)."""
    mlm_weight = jnp.maximum(sums["mlm_weight"], 1.0)
    nsp_count = jnp.maximum(sums["nsp_count"], 1.0)
    mlm_loss = sums["mlm_loss"] / mlm_weight
    nsp_loss = sums["nsp_loss"] / nsp_count
    return {
        "loss": mlm_loss + nsp_weight * nsp_loss,
        "mlm_loss": mlm_loss,
        "mlm_accuracy": sums["mlm_correct"] / mlm_weight,
        f"{pair_task}_loss": nsp_loss,
        f"{pair_task}_accuracy": sums["nsp_correct"] / nsp_count,
    }


def objective(model: nn.Module, nsp_weight: float = 1.0, pair_task: str = "nsp") -> update.Objective:
    """MLM + nsp_weight x NSP (or SOP), as the shared update takes it."""
    return update.Objective(
        loss=functools.partial(losses, model=model, nsp_weight=nsp_weight),
        denominators=denominators,
        summarise=functools.partial(summarise, nsp_weight=nsp_weight, pair_task=pair_task),
    )


def make_model(config: PretrainConfig) -> nn.Module:
    """The pretraining model of `config.train.objective`: BERT with its MLM and NSP heads, or
    ELECTRA's generator and discriminator."""
    if config.train.objective == "electra":
        return ElectraForPreTraining(config.model, config.model.electra_generator(config.train.generator_size))
    return BertForPreTraining(config.model)


def make_objective(model: nn.Module, config: PretrainConfig) -> update.Objective:
    """`config.train.objective`'s loss: MLM + NSP (or SOP), or ELECTRA's replaced-token detection."""
    if config.train.objective == "electra":
        return electra.objective(model, config.train.discriminator_weight)
    return objective(model, config.train.nsp_weight, config.data.pair_task)


def train_flops(config: PretrainConfig, predictions: int) -> float:
    """Useful FLOPs of one training row: the model's, plus ELECTRA's generator and its per-token head."""
    length, model = config.data.max_seq_length, config.model
    if config.train.objective != "electra":
        return model.train_flops(length, predictions)
    generator = model.electra_generator(config.train.generator_size)
    head = 3.0 * length * 2 * (model.hidden_size**2 + model.hidden_size)
    return model.train_flops(length, 0) + generator.train_flops(length, predictions) + head


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum_steps: int = 1,
    nsp_weight: float = 1.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One pretraining update: `update.train_step` with the MLM + NSP objective."""
    return update.train_step(
        state,
        batch,
        rng,
        objective=objective(model, nsp_weight),
        tx=tx,
        schedule=schedule,
        grad_accum_steps=grad_accum_steps,
    )


def eval_step(
    params: Any, batch: Batch, *, objective: update.Objective, most_frequent_token: int
) -> dict[str, jax.Array]:
    """Metric sums (not means) of one evaluation batch, so batches add up exactly.

    `unigram_correct` counts the masked tokens equal to `most_frequent_token`: the hits of the
    unigram-frequency baseline that always predicts it.
    """
    _, sums = objective.loss(params, batch, None, (jnp.ones(()), jnp.ones(())))
    hits = (batch["masked_lm_ids"] == most_frequent_token) * batch["masked_lm_weights"]
    return {**sums, "unigram_correct": hits.sum()}


@dataclasses.dataclass
class Steps:
    """The jitted train and eval steps of one run, with their shardings."""

    train: Any
    evaluate: Any
    batch_sharding: jax.sharding.NamedSharding
    objective: update.Objective


def compile_steps(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings: Any,
    mesh: jax.sharding.Mesh,
    grad_accum_steps: int,
    most_frequent_token: int = 0,
    loss: update.Objective | None = None,
    external_rate: bool = False,
) -> Steps:
    """The jitted train and eval steps of `loss` (MLM + NSP when None); with `external_rate` (a
    time budget) the train step takes the schedule's position as a fourth argument."""
    loss = loss or objective(model)
    train = update.compile_train_step(loss, tx, schedule, state_shardings, mesh, grad_accum_steps, external_rate)
    batch_shard = sharding.batch_sharding(mesh)
    evaluate = jax.jit(
        functools.partial(eval_step, objective=loss, most_frequent_token=most_frequent_token),
        in_shardings=(state_shardings.params, batch_shard),
        out_shardings=sharding.replicated(mesh),
    )
    return Steps(train, evaluate, batch_shard, loss)


@dataclasses.dataclass
class Built:
    """A run's model, optimizer, parameter init, abstract sharded state and jitted steps."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    init: Callable[[jax.Array], Any]
    abstract: TrainState
    shardings: Any
    steps: Steps


def build(config: PretrainConfig, mesh: jax.sharding.Mesh, init_rng: jax.Array, most_frequent_token: int = 0) -> Built:
    """The model of `config` (its final shape), its optimizer (rate applied by the step on a time
    budget), its state's shapes and shardings on `mesh` (nothing computed) and its jitted steps:
    what a run trains with, and what `preflight` compiles for a topology."""
    model = make_model(config)
    on_budget = config.train.time_budget_hours > 0
    tx, schedule = optim.make_optimizer(config.optim, config.train.num_train_steps, external_rate=on_budget)
    init = param_init(model, config.data.max_seq_length)
    abstract, shardings = abstract_sharded_state(init_rng, init, tx, mesh, config.mesh)
    loss = make_objective(model, config)
    steps = compile_steps(
        model, tx, schedule, shardings, mesh, config.optim.grad_accum_steps, most_frequent_token, loss, on_budget
    )
    return Built(model, tx, schedule, init, abstract, shardings, steps)


def abstract_batch(
    config: PretrainConfig, rows: int, batch_sharding: jax.sharding.NamedSharding
) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes and dtypes of a global batch of `rows` rows, placed by `batch_sharding`."""
    length, predictions = config.data.max_seq_length, pretraining_data.predictions_per_row(config.data)
    shapes = {
        "input_ids": ((rows, length), jnp.int32),
        "token_type_ids": ((rows, length), jnp.int32),
        "attention_mask": ((rows, length), jnp.int32),
        "masked_lm_positions": ((rows, predictions), jnp.int32),
        "masked_lm_ids": ((rows, predictions), jnp.int32),
        "masked_lm_weights": ((rows, predictions), jnp.float32),
        "next_sentence_labels": ((rows,), jnp.int32),
    }
    if config.data.pack_examples > 1:
        slots = (rows, config.data.pack_examples)
        shapes["next_sentence_labels"] = (slots, jnp.int32)
        shapes["next_sentence_positions"] = (slots, jnp.int32)
        shapes["next_sentence_weights"] = (slots, jnp.float32)
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding) for k, (shape, dtype) in shapes.items()}


def abstract_position(config: PretrainConfig, mesh: jax.sharding.Mesh) -> tuple[jax.ShapeDtypeStruct, ...]:
    """The train step's schedule-position argument, replicated: one float32 scalar for a run on a
    time budget (see `compile_steps`), none otherwise."""
    if config.train.time_budget_hours <= 0:
        return ()
    return (jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding.replicated(mesh)),)


def evaluate(
    steps: Steps, params: Any, examples: pretraining_data.PretrainingExamples, batch_size: int, num_batches: int
) -> dict[str, float]:
    """Held-out MLM / NSP metrics over a fixed set of eval batches (epoch 0, static masks).

    Also reports `unigram_mlm_accuracy`: the accuracy of always predicting the most frequent
    training token, the baseline a model must beat.
    """
    num_batches = max(1, min(num_batches, len(examples) // batch_size))
    totals: dict[str, float] = {}
    for index in range(num_batches):
        local = examples.batch(index, batch_size, jax.process_index(), jax.process_count())
        sums = jax.device_get(steps.evaluate(params, loop.to_global(local, steps.batch_sharding)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    means = steps.objective.summarise({k: jnp.asarray(v) for k, v in totals.items()})
    metrics = {k: float(v) for k, v in means.items()}
    metrics["unigram_mlm_accuracy"] = totals["unigram_correct"] / max(totals["mlm_weight"], 1.0)
    metrics["examples"] = totals["nsp_count"] if "nsp_count" in totals else totals["rows"]
    return metrics


def resolve_model_config(model: ModelConfig, tokenizer_vocab_size: int) -> ModelConfig:
    """vocab_size 0 means "the vocab's size"; a model vocab smaller than the vocab is an error."""
    if model.vocab_size == 0:
        return dataclasses.replace(model, vocab_size=tokenizer_vocab_size)
    if model.vocab_size < tokenizer_vocab_size:
        raise ConfigError(
            f"config key model.vocab_size={model.vocab_size} is smaller than the vocab ({tokenizer_vocab_size} tokens)"
        )
    return model


def pretrain(
    config: PretrainConfig, workdir: str | Path, clock: Callable[[], float] = time.monotonic
) -> dict[str, float]:
    """Pretrains BERT with MLM + NSP as `config` says; resumes from `workdir` if it holds a run.

    Returns the final held-out metrics. Bad input found before the first checkpoint leaves
    `workdir` as it was (`fileio.run_directory`). `clock` (seconds) measures a time budget's use.
    """
    workdir = Path(workdir)
    fileio.check_writable_folder(workdir, "workdir")
    if config.data.cache_dir:
        fileio.check_writable_folder(config.data.cache_dir, "config key data.cache_dir:")
    with fileio.run_directory(workdir):
        return _pretrain(config, workdir, clock)


@dataclasses.dataclass
class Data:
    """The run's examples: tokenized and paired once (cached by fingerprint), masked at read time."""

    prepared: Path
    train: pretraining_data.PretrainingExamples
    eval: pretraining_data.PretrainingExamples
    most_frequent_token: int


def setup_model_config(config: PretrainConfig) -> tuple[PretrainConfig, Any, pretrained.Pretrained | None]:
    """The config with the model's final shape (from `init`, or the vocab's size), the tokenizer and
    the checkpoint named by `init`."""
    tokenizer = load_tokenizer(config.data.vocab_file, config.data.lowercase)
    checkpoint = pretrained.load(config.init) if config.init else None
    if config.init_optimizer and checkpoint is not None and checkpoint.kind != "run":
        raise ConfigError(f"config key init_optimizer=True: init {config.init} is not a bertjax pretraining run")
    if checkpoint is not None:
        pretrained.check_vocab(checkpoint, tokenizer.get_vocab_size(), config.data.vocab_file)
        model_config = pretrained.model_config_for_run(checkpoint, config.model)
    else:
        model_config = resolve_model_config(config.model, tokenizer.get_vocab_size())
    return dataclasses.replace(config, model=model_config), tokenizer, checkpoint


def setup_data(config: PretrainConfig, tokenizer: Any, workdir: Path) -> Data:
    data_cfg = config.data
    cache_dir = Path(data_cfg.cache_dir) if data_cfg.cache_dir else workdir / "data"
    prepared = distributed.once_per_file_system(  # hosts that share cache_dir find process 0's
        "prepare corpus", cache_dir, lambda: pretraining_data.prepare(data_cfg, tokenizer, cache_dir)
    )
    train = pretraining_data.load_split(prepared, "train", data_cfg, tokenizer)
    held_out = pretraining_data.load_split(prepared, "eval", data_cfg, tokenizer)
    logging.info(
        "train rows: %d (%d pairs, up to %d per row); tokens fill %.1f%% of the rows",
        len(train),
        len(train.instances),
        data_cfg.pack_examples,
        100 * train.fill,
    )
    token_counts = np.load(prepared / "train_token_counts.npy")
    return Data(prepared, train, held_out, int(token_counts.argmax()))


def schedule_position(config: PretrainConfig, elapsed_seconds: float) -> np.float32:
    """Where a time-budget run is in its learning-rate schedule: the elapsed share of the budget
    (at most 1) times the schedule's length in steps."""
    budget = config.train.time_budget_hours * 3600.0
    length = config.optim.schedule_steps or config.train.num_train_steps
    return np.float32(min(elapsed_seconds / budget, 1.0) * length)


def _pretrain(config: PretrainConfig, workdir: Path, clock: Callable[[], float]) -> dict[str, float]:
    is_main = jax.process_index() == 0
    config, tokenizer, checkpoint = setup_model_config(config)
    model_config, data_cfg, train_cfg = config.model, config.data, config.train
    mesh = sharding.make_mesh(config.mesh)
    for _, size in train_cfg.batch_schedule():  # batch_size, and the sizes of a batch-size warmup
        if size % (jax.process_count() * config.optim.grad_accum_steps):
            raise ConfigError(f"config key train.batch_size={size} does not split over hosts")
    if train_cfg.eval_rows() % jax.process_count():
        raise ConfigError(f"config key train.eval_batch_size={train_cfg.eval_rows()} does not split over hosts")
    sharding.check_batch_splits(mesh, train_cfg.eval_rows(), "train.eval_batch_size")
    data = setup_data(config, tokenizer, workdir)

    # The model, its optimizer and its state: born sharded, then resumed or filled from init.
    init_rng, dropout_rng = run_keys(train_cfg.seed)
    built = build(config, mesh, init_rng, data.most_frequent_token)
    tx, init, abstract, shardings, steps = built.tx, built.init, built.abstract, built.shardings, built.steps
    on_budget = train_cfg.time_budget_hours > 0
    if train_cfg.compiled_step_file:  # the train step bertjax.preflight compiled for this topology
        key = "train.compiled_step_file"
        if len(train_cfg.batch_schedule()) > 1:
            raise ConfigError(
                f"config key {key}: one compiled step serves one batch size (train.batch_size_phases is set)"
            )
        batch = abstract_batch(config, train_cfg.batch_size, steps.batch_sharding)
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config.mesh)):
            traced = steps.train.trace(abstract, batch, dropout_rng, *abstract_position(config, mesh))
            steps = dataclasses.replace(steps, train=executables.load(train_cfg.compiled_step_file, key, traced))
        if is_main:
            print(f"train step from {train_cfg.compiled_step_file} (compiled ahead of time)")
    manager = checkpoints.manager(workdir / "checkpoints", train_cfg.keep_checkpoints)
    state, progress, _ = checkpoints.restore_latest(manager, abstract)
    first_step = int(progress.get("step", 0))
    if not progress and checkpoint is None:  # a new run from scratch
        state = fresh_state(init_rng, init, tx, shardings, mesh, config.mesh)
    elif not progress:  # a new run from pretrained weights
        state, _ = init_from_checkpoint(init_rng, init, abstract, checkpoint, tx, mesh, config.mesh, is_main)
        if config.init_optimizer:  # and the optimizer state of the run they come from
            restart = config.init_optimizer_count == "restart"
            state = checkpoints.restore_run_state(checkpoint.path, state, restart_count=restart)
            if is_main:
                print(f"optimizer state from {checkpoint.path} (init_optimizer)")
    examples_offset = int(progress.get("examples_seen", 0)) - train_cfg.examples_before(first_step)

    # Train: step, log, evaluate, checkpoint.
    writer = logs.Writer(workdir, enabled=is_main)
    if is_main:
        num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
        writer.write_config(config_lib.to_dict(config), num_params, data.prepared)
    batches = pretraining_data.batch_iterator(
        data.train,
        first_step,
        train_cfg.num_train_steps,
        train_cfg.batch_size,
        data_cfg.num_threads,
        jax.process_index(),
        jax.process_count(),
        offset=examples_offset,
        num_processes=data_cfg.num_processes,
        sizes=train_cfg,
    )
    progress_bar = logs.progress_bar(first_step, train_cfg.num_train_steps, enabled=is_main)
    flops_per_row = train_flops(config, data.train.predictions_per_row)
    train_log = loop.TrainLog(
        train_cfg.nonfinite, jax.devices()[0].device_kind, model_config.dtype, int(progress.get("skipped_steps", 0))
    )
    eval_metrics: dict[str, float] = {}
    rules = sharding.rules(config.mesh)
    stopped_at = None
    # A time budget: the loop's wall-clock time, carried over from the checkpoint it resumes.
    budget_seconds = train_cfg.time_budget_hours * 3600.0
    elapsed_before = elapsed = float(progress.get("elapsed_seconds", 0.0))
    last_step = first_step if on_budget and elapsed >= budget_seconds else train_cfg.num_train_steps
    started = clock()

    def evaluate_now() -> dict[str, float]:
        return evaluate(steps, state.params, data.eval, train_cfg.eval_rows(), train_cfg.eval_batches)

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), loop.StopSignal(mesh) as stop_signal:
        for step in range(first_step, last_step):
            budget_args = (schedule_position(config, elapsed),) if on_budget else ()
            batch = loop.to_global(next(batches), steps.batch_sharding)
            state, metrics = steps.train(state, batch, dropout_rng, *budget_args)
            rows = train_cfg.batch_size_at(step)
            train_log.add(metrics, rows, rows * flops_per_row)
            done = step + 1
            elapsed = elapsed_before + clock() - started
            is_last = done == train_cfg.num_train_steps or (on_budget and elapsed >= budget_seconds)
            checkpoint_now = done % train_cfg.checkpoint_every_steps == 0 or is_last
            if done % train_cfg.log_every_steps == 0 or is_last or checkpoint_now:
                summary = train_log.flush(done, manager, progress_bar)
                writer.write_scalars(done, "train", summary)
                progress_bar.set_postfix(
                    loss=f"{summary['loss']:.3f}",
                    mlm_acc=f"{summary['mlm_accuracy']:.3f}",
                    seq_s=f"{summary['seq_per_second']:.1f}",
                )
            if done % train_cfg.eval_every_steps == 0 or is_last:
                train_log.pause()  # evaluation time is not training throughput
                eval_metrics = evaluate_now()
                budget_time = {"elapsed_seconds": elapsed} if on_budget else {}  # a budget run's curves
                writer.write_scalars(done, "eval", {**eval_metrics, **budget_time})
                train_log.resume()
            stop = stop_signal.agreed()
            if checkpoint_now or stop:
                position = {"step": done, "examples_seen": examples_offset + train_cfg.examples_before(done)}
                position |= {"elapsed_seconds": elapsed} if on_budget else {}
                checkpoints.save(manager, done, state, {**position, "skipped_steps": train_log.skipped_steps})
            progress_bar.update(1)
            if stop and not is_last:
                stopped_at = done
                break
            if is_last:  # the steps, or the time budget, are used up
                break
    progress_bar.close()
    pretraining_data.close_batches(batches)  # ends the loader's threads or processes
    manager.wait_until_finished()
    manager.close()
    if stopped_at is not None:
        writer.close()
        return {"stopped_at_step": float(stopped_at)}
    if not eval_metrics:  # nothing left to train: evaluate the restored state
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            eval_metrics = evaluate_now()
    if is_main:
        writer.plot_curves()
        (workdir / "final_eval.json").write_text(json.dumps(eval_metrics, indent=2))
    writer.close()
    return eval_metrics


def print_summary(metrics: dict[str, float], workdir: str | Path) -> None:
    """The lines a user reads at the end of a run: held-out accuracy and where things are."""
    workdir = Path(workdir)
    if "stopped_at_step" in metrics:
        loop.print_stopped(metrics["stopped_at_step"], workdir)
        return
    task = next(t for t in ("rtd", "sop", "nsp") if f"{t}_accuracy" in metrics)
    name = {"rtd": "replaced-token", "sop": "SOP", "nsp": "NSP"}[task]
    print(
        f"held-out MLM accuracy {metrics['mlm_accuracy']:.4f} "
        f"(unigram-frequency baseline {metrics['unigram_mlm_accuracy']:.4f}), "
        f"{name} accuracy {metrics[f'{task}_accuracy']:.4f}, loss {metrics['loss']:.4f} "
        f"on {int(metrics['examples'])} held-out examples"
    )
    print(f"plot:        {workdir / 'curves.png'}")
    print(f"logs:        {workdir / 'tensorboard'} (TensorBoard), {workdir / 'metrics.jsonl'}")
    print(f"checkpoints: {workdir / 'checkpoints'}")
