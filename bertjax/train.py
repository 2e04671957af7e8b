"""Train state, the pure jitted pretraining step, evaluation, and the pretraining loop.

`train_step(state, batch, rng)` is a module-level pure function (partial-applied over the model,
optimizer and schedule) jitted with explicit in/out shardings and the state donated. The loop in
`pretrain` is flat: prepare data, build state (sharded at birth), restore the latest checkpoint,
then step / log / evaluate / checkpoint until done.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

from bertjax import checkpoint as checkpointing
from bertjax import config as config_lib
from bertjax import distributed, fileio, optim, pretrained, reporting, sharding
from bertjax.config import ModelConfig, PretrainConfig
from bertjax.data import pretraining
from bertjax.errors import ConfigError, TrainingStopped
from bertjax.hf_weights import flatten, stack_layers, stacked_layer_count, unflatten, unstack_layers
from bertjax.model import BertForPreTraining
from bertjax.tokenizer import load_tokenizer

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


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree."""

    step: jax.Array
    params: Any
    opt_state: Any


def _dummy_inputs(batch_size: int, seq_length: int, predictions: int) -> tuple[jax.Array, ...]:
    ids = jnp.zeros((batch_size, seq_length), jnp.int32)
    return ids, ids, ids, jnp.zeros((batch_size, predictions), jnp.int32)


def init_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation, seq_length: int) -> TrainState:
    """A fresh (boxed) state: parameters still carry their logical axis names."""
    params = model.init({"params": rng}, *_dummy_inputs(1, seq_length, 1))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def create_sharded_state(
    rng: jax.Array,
    model: nn.Module,
    tx: optax.GradientTransformation,
    seq_length: int,
    mesh: jax.sharding.Mesh,
    mesh_config: config_lib.MeshConfig,
) -> tuple[TrainState, Any]:
    """State born sharded: eval_shape -> logical specs -> jitted init with out_shardings.

    Returns (state, shardings); the state's arrays are never materialised whole on one device.
    """
    init = functools.partial(init_state, model=model, tx=tx, seq_length=seq_length)
    abstract = jax.eval_shape(init, rng)
    shardings = sharding.state_shardings(abstract, mesh, mesh_config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
        state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
    return state, shardings


def nsp_slot_weights(batch: Batch) -> jax.Array:
    """1/0 per next-sentence prediction: one per row, or the packed rows' `next_sentence_weights`."""
    if "next_sentence_weights" in batch:
        return batch["next_sentence_weights"]
    return jnp.ones(batch["next_sentence_labels"].shape, jnp.float32)


def _losses(
    params: Any,
    batch: Batch,
    rng: jax.Array | None,
    model: nn.Module,
    mlm_denominator: jax.Array,
    nsp_denominator: jax.Array,
    nsp_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of one (micro)batch, normalised by the whole batch's counts, and its metric sums."""
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
    loss = sums["mlm_loss"] / mlm_denominator + nsp_weight * sums["nsp_loss"] / nsp_denominator
    return loss, sums


def _summarise(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    mlm_weight = jnp.maximum(sums["mlm_weight"], 1.0)
    mlm_loss = sums["mlm_loss"] / mlm_weight
    nsp_loss = sums["nsp_loss"] / sums["nsp_count"]
    return {
        "loss": mlm_loss + nsp_loss,
        "mlm_loss": mlm_loss,
        "mlm_accuracy": sums["mlm_correct"] / mlm_weight,
        "nsp_loss": nsp_loss,
        "nsp_accuracy": sums["nsp_correct"] / sums["nsp_count"],
    }


def apply_update(tx: optax.GradientTransformation, grads: Any, params: Any, opt_state: Any) -> tuple[Any, Any]:
    """One optimizer update: (new params, new optimizer state)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


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
    """One optimizer update on a global batch: MLM + NSP loss, gradients, clipping, AdamW/LAMB.

    With grad_accum_steps > 1 the batch is split into microbatches scanned in sequence; the loss
    of each is normalised by the whole batch's counts, so the summed gradient equals the
    full-batch gradient. Dropout keys come from `rng` folded with the step.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    mlm_denominator = jnp.maximum(batch["masked_lm_weights"].sum(), 1.0)
    nsp_denominator = jnp.maximum(nsp_slot_weights(batch).sum(), 1.0)
    grad_fn = jax.grad(_losses, has_aux=True)

    if grad_accum_steps == 1:
        grads, sums = grad_fn(state.params, batch, step_rng, model, mlm_denominator, nsp_denominator, nsp_weight)
    else:
        micro = jax.tree.map(lambda x: x.reshape(grad_accum_steps, -1, *x.shape[1:]), batch)

        def accumulate(carry: Any, inputs: Any) -> tuple[Any, None]:
            grads_acc, sums_acc = carry
            index, microbatch = inputs
            grads, sums = grad_fn(
                state.params,
                microbatch,
                jax.random.fold_in(step_rng, index),
                model,
                mlm_denominator,
                nsp_denominator,
                nsp_weight,
            )
            return (jax.tree.map(jnp.add, grads_acc, grads), jax.tree.map(jnp.add, sums_acc, sums)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("mlm_loss", "mlm_correct", "mlm_weight", "nsp_loss")}
        zero_sums |= {"nsp_correct": jnp.zeros((), jnp.float32), "nsp_count": jnp.zeros((), jnp.float32)}
        (grads, sums), _ = jax.lax.scan(accumulate, (zeros, zero_sums), (jnp.arange(grad_accum_steps), micro))

    grad_norm = optax.global_norm(grads)
    # A non-finite loss or gradient never reaches the state: the update is dropped (and counted);
    # the loop then stops or goes on, as train.nonfinite says. (lax.cond, not a per-leaf
    # jnp.where: the select costs a pass over the parameters and the optimizer state.)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums["mlm_loss"] + sums["nsp_loss"])
    params, opt_state = jax.lax.cond(
        finite,
        lambda: apply_update(tx, grads, state.params, state.opt_state),
        lambda: (state.params, state.opt_state),
    )
    metrics = _summarise(sums)
    metrics["grad_norm"] = grad_norm
    metrics["param_norm"] = optax.global_norm(params)
    metrics["learning_rate"] = schedule(state.step)
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module, most_frequent_token: int) -> dict[str, jax.Array]:
    """Metric sums (not means) of one evaluation batch, so batches add up exactly.

    `unigram_correct` counts the masked tokens equal to `most_frequent_token`: the hits of the
    unigram-frequency baseline that always predicts it.
    """
    _, sums = _losses(params, batch, None, model, jnp.ones(()), jnp.ones(()))
    hits = (batch["masked_lm_ids"] == most_frequent_token) * batch["masked_lm_weights"]
    return {**sums, "unigram_correct": hits.sum()}


@dataclasses.dataclass
class Steps:
    """The jitted train and eval steps of one run, with their shardings."""

    train: Any
    evaluate: Any
    batch_sharding: jax.sharding.NamedSharding


def compile_steps(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings: Any,
    mesh: jax.sharding.Mesh,
    grad_accum_steps: int,
    most_frequent_token: int = 0,
    nsp_weight: float = 1.0,
) -> Steps:
    batch_shard = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    train = jax.jit(
        functools.partial(
            train_step,
            model=model,
            tx=tx,
            schedule=schedule,
            grad_accum_steps=grad_accum_steps,
            nsp_weight=nsp_weight,
        ),
        in_shardings=(state_shardings, batch_shard, replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    evaluate = jax.jit(
        functools.partial(eval_step, model=model, most_frequent_token=most_frequent_token),
        in_shardings=(state_shardings.params, batch_shard),
        out_shardings=replicated,
    )
    return Steps(train=train, evaluate=evaluate, batch_sharding=batch_shard)


def to_global(batch: dict[str, np.ndarray], batch_sharding: jax.sharding.NamedSharding) -> Batch:
    """A global batch on the mesh from this host's rows."""
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}


def evaluate(
    steps: Steps, params: Any, examples: pretraining.PretrainingExamples, batch_size: int, num_batches: int
) -> dict[str, float]:
    """Held-out MLM / NSP metrics over a fixed set of eval batches (epoch 0, static masks).

    Also reports `unigram_mlm_accuracy`: the accuracy of always predicting the most frequent
    training token, the baseline a model must beat.
    """
    num_batches = max(1, min(num_batches, len(examples) // batch_size))
    totals: dict[str, float] = {}
    for index in range(num_batches):
        local = examples.batch(index, batch_size, jax.process_index(), jax.process_count())
        sums = jax.device_get(steps.evaluate(params, to_global(local, steps.batch_sharding)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    metrics = {k: float(v) for k, v in _summarise({k: jnp.asarray(v) for k, v in totals.items()}).items()}
    metrics["unigram_mlm_accuracy"] = totals["unigram_correct"] / max(totals["mlm_weight"], 1.0)
    metrics["examples"] = totals["nsp_count"]
    return metrics


def init_from_checkpoint(
    state: TrainState,
    checkpoint: pretrained.Pretrained,
    tx: optax.GradientTransformation,
    shardings: Any,
    verbose: bool,
) -> tuple[TrainState, pretrained.LoadReport]:
    """The state with the checkpoint's parameters (heads it lacks stay fresh) and a new optimizer state.
    Checkpoints hold one parameter per layer; a scanned encoder (`model.scan_layers`) takes them
    stacked."""
    fresh = flatten(jax.device_get(state.params))
    merged, report = pretrained.merge(unstack_layers(fresh), checkpoint)
    if layers := stacked_layer_count(fresh):
        merged = stack_layers(merged, layers)
    params = jax.device_put(unflatten(merged), shardings.params)
    if verbose:
        print(f"init from {checkpoint.path}: {report.describe()}")
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return TrainState(step=state.step, params=params, opt_state=opt_state), report


def resolve_model_config(model: ModelConfig, tokenizer_vocab_size: int) -> ModelConfig:
    """vocab_size 0 means "the vocab's size"; a model vocab smaller than the vocab is an error."""
    if model.vocab_size == 0:
        return dataclasses.replace(model, vocab_size=tokenizer_vocab_size)
    if model.vocab_size < tokenizer_vocab_size:
        raise ConfigError(
            f"config key model.vocab_size={model.vocab_size} is smaller than the vocab ({tokenizer_vocab_size} tokens)"
        )
    return model


def pretrain(config: PretrainConfig, workdir: str | Path) -> dict[str, float]:
    """Pretrains BERT with MLM + NSP as `config` says; resumes from `workdir` if it holds a run.

    Returns the final held-out metrics. A run that fails before its first checkpoint leaves no
    `checkpoints/` directory behind, nor a workdir that it created and left empty.
    """
    workdir = Path(workdir)
    with fileio.folders_removed_on_failure(workdir / "checkpoints"):
        return _pretrain(config, workdir)


def _pretrain(config: PretrainConfig, workdir: Path) -> dict[str, float]:
    is_main = jax.process_index() == 0
    tokenizer = load_tokenizer(config.data.vocab_file, config.data.lowercase)
    checkpoint = pretrained.load(config.init) if config.init else None
    if config.init_optimizer and checkpoint is not None and checkpoint.kind != "run":
        raise ConfigError(f"config key init_optimizer=True: init {config.init} is not a bertjax pretraining run")
    if checkpoint is not None:
        pretrained.check_vocab(checkpoint, tokenizer.get_vocab_size(), config.data.vocab_file)
        model_config = pretrained.model_config_for_run(checkpoint, config.model)
    else:
        model_config = resolve_model_config(config.model, tokenizer.get_vocab_size())
    config = dataclasses.replace(config, model=model_config)
    data_cfg, train_cfg = config.data, config.train

    # Data: tokenized and paired once (cached by fingerprint), masked at read time.
    cache_dir = Path(data_cfg.cache_dir) if data_cfg.cache_dir else workdir / "data"
    prepared = distributed.once_per_file_system(  # hosts that share cache_dir find process 0's
        "prepare corpus", cache_dir, lambda: pretraining.prepare(data_cfg, tokenizer, cache_dir)
    )
    train_examples = pretraining.load_split(prepared, "train", data_cfg, tokenizer)
    eval_examples = pretraining.load_split(prepared, "eval", data_cfg, tokenizer)
    logging.info(
        "train rows: %d (%d pairs, up to %d per row); tokens fill %.1f%% of the rows",
        len(train_examples),
        len(train_examples.instances),
        data_cfg.pack_examples,
        100 * train_examples.fill,
    )
    token_counts = np.load(prepared / "train_token_counts.npy")
    most_frequent_token = int(token_counts.argmax())

    mesh = sharding.make_mesh(config.mesh)
    if train_cfg.batch_size % (jax.process_count() * config.optim.grad_accum_steps):
        raise ConfigError(f"config key train.batch_size={train_cfg.batch_size} does not split over hosts")
    model = BertForPreTraining(model_config)
    tx, schedule = optim.make_optimizer(config.optim, train_cfg.num_train_steps)
    rng = jax.random.key(train_cfg.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    state, shardings = create_sharded_state(init_rng, model, tx, data_cfg.max_seq_length, mesh, config.mesh)
    steps = compile_steps(
        model, tx, schedule, shardings, mesh, config.optim.grad_accum_steps, most_frequent_token, train_cfg.nsp_weight
    )

    manager = checkpointing.manager(workdir / "checkpoints", train_cfg.keep_checkpoints)
    state, progress, _ = checkpointing.restore_latest(manager, state)
    first_step = int(progress.get("step", 0))
    if checkpoint is not None and first_step == 0:  # a new run from pretrained weights
        state, _ = init_from_checkpoint(state, checkpoint, tx, shardings, is_main)
        if config.init_optimizer:  # and the optimizer state of the run they come from
            restart = config.init_optimizer_count == "restart"
            state = checkpointing.restore_run_state(checkpoint.path, state, restart_count=restart)
            if is_main:
                print(f"optimizer state from {checkpoint.path} (init_optimizer)")
    examples_offset = int(progress.get("examples_seen", 0)) - first_step * train_cfg.batch_size

    writer = reporting.Writer(workdir, enabled=is_main)
    if is_main:
        writer.write_config(config_lib.to_dict(config), model_config.num_params(), prepared)
    batches = pretraining.batch_iterator(
        train_examples,
        first_step,
        train_cfg.num_train_steps,
        train_cfg.batch_size,
        data_cfg.num_threads,
        jax.process_index(),
        jax.process_count(),
        offset=examples_offset,
        num_processes=data_cfg.num_processes,
    )
    progress_bar = reporting.progress_bar(first_step, train_cfg.num_train_steps, enabled=is_main)
    flops_per_row = model_config.train_flops(data_cfg.max_seq_length, train_examples.predictions_per_row)
    datasheet = reporting.DATASHEET_TFLOPS.get((jax.devices()[0].device_kind, model_config.dtype))
    eval_metrics: dict[str, float] = {}
    pending: list[dict[str, jax.Array]] = []
    last_time, last_step = time.perf_counter(), first_step
    rules = sharding.rules(config.mesh)
    skipped_steps = int(progress.get("skipped_steps", 0))
    stopped_at = None
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), StopSignal(mesh) as stop_signal:
        for step in range(first_step, train_cfg.num_train_steps):
            batch = to_global(next(batches), steps.batch_sharding)
            state, metrics = steps.train(state, batch, dropout_rng)
            pending.append(metrics)
            done = step + 1
            is_last = done == train_cfg.num_train_steps
            checkpoint_now = done % train_cfg.checkpoint_every_steps == 0 or is_last
            if done % train_cfg.log_every_steps == 0 or is_last or checkpoint_now:
                fetched = jax.device_get(pending)  # waits for the steps dispatched so far
                now = time.perf_counter()
                summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                summary["seq_per_second"] = (done - last_step) * train_cfg.batch_size / (now - last_time)
                summary |= reporting.throughput(flops_per_row, summary["seq_per_second"], jax.device_count(), datasheet)
                bad = [done - len(fetched) + 1 + i for i, m in enumerate(fetched) if m["nonfinite"]]
                skipped_steps += len(bad)
                summary["skipped_steps"] = float(skipped_steps)
                last_time, last_step, pending = now, done, []
                writer.write_scalars(done, "train", summary)
                progress_bar.set_postfix(
                    loss=f"{summary['loss']:.3f}",
                    mlm_acc=f"{summary['mlm_accuracy']:.3f}",
                    seq_s=f"{summary['seq_per_second']:.1f}",
                )
                if bad and train_cfg.nonfinite == "stop":
                    progress_bar.close()  # the error is the last line the user sees
                    manager.wait_until_finished()
                    kept = manager.latest_step()
                    raise TrainingStopped(
                        f"non-finite loss or gradient at step {bad[0]} (train.nonfinite=stop); the update was not "
                        f"applied and nothing after step {kept or 0} was saved: the latest checkpoint is "
                        f"{'step ' + str(kept) if kept else 'none'} in {workdir / 'checkpoints'}"
                    )
                if bad:
                    logging.warning("skipped %d non-finite update(s), at steps %s", len(bad), bad[:10])
            if done % train_cfg.eval_every_steps == 0 or is_last:
                eval_metrics = evaluate(
                    steps, state.params, eval_examples, train_cfg.batch_size, train_cfg.eval_batches
                )
                writer.write_scalars(done, "eval", eval_metrics)
                last_time = time.perf_counter()  # evaluation time is not training throughput
            stop = stop_signal.agreed()
            if checkpoint_now or stop:
                position = {"step": done, "examples_seen": examples_offset + done * train_cfg.batch_size}
                checkpointing.save(manager, done, state, {**position, "skipped_steps": skipped_steps})
            progress_bar.update(1)
            if stop and not is_last:
                stopped_at = done
                break
    progress_bar.close()
    pretraining.close_batches(batches)  # ends the loader's threads or processes
    manager.wait_until_finished()
    manager.close()
    if stopped_at is not None:
        writer.close()
        return {"stopped_at_step": float(stopped_at)}
    if not eval_metrics:  # nothing left to train: evaluate the restored state
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            eval_metrics = evaluate(steps, state.params, eval_examples, train_cfg.batch_size, train_cfg.eval_batches)
    if is_main:
        writer.plot_curves()
        (workdir / "final_eval.json").write_text(json.dumps(eval_metrics, indent=2))
    writer.close()
    return eval_metrics


class StopSignal:
    """SIGTERM / SIGINT (preemption, Ctrl-C) noted, to stop at the next step boundary after a checkpoint.

    With several processes, `agreed()` is true on all of them at the same step once any of them
    received a signal, so they save the same checkpoint together. Each call starts a max of the
    processes' flags on the devices (queued behind the step just dispatched) and answers with
    the previous call's: a signal stops the run one step later, and the host never waits for
    the devices just to ask (a blocking gather per step would leave them idle while the host
    builds and dispatches the next step).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, mesh: jax.sharding.Mesh | None = None) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}
        self._mesh = mesh
        self._in_flight: jax.Array | None = None
        self._any: Any = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        del frame
        self.received = True
        logging.warning("received signal %d: saving a checkpoint at the end of this step, then stopping", signum)

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return self.received
        answer = self._in_flight is not None and bool(np.asarray(self._in_flight.addressable_data(0)))
        self._in_flight = self._any_received()
        return answer

    def _any_received(self) -> jax.Array:
        """Whether any process has received a signal, as a replicated device scalar (not waited for)."""
        mesh = self._mesh or jax.sharding.Mesh(np.asarray(jax.devices()), ("devices",))
        one_per_device = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(tuple(mesh.axis_names)))
        if self._any is None:
            self._any = jax.jit(jnp.max, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        local = np.full(jax.local_device_count(), self.received, np.int32)  # the same on each local device
        flags = jax.make_array_from_process_local_data(one_per_device, local, (jax.device_count(),))
        return self._any(flags)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def print_stopped(step: float, workdir: str | Path) -> None:
    """The last line of a run that SIGTERM/SIGINT stopped (pretraining and fine-tuning alike)."""
    print(
        f"stopped by a signal: checkpoint saved at step {int(step)} in {Path(workdir) / 'checkpoints'}; "
        "run the same command to resume"
    )


def print_summary(metrics: dict[str, float], workdir: str | Path) -> None:
    """The lines a user reads at the end of a run: held-out accuracy and where things are."""
    workdir = Path(workdir)
    if "stopped_at_step" in metrics:
        print_stopped(metrics["stopped_at_step"], workdir)
        return
    print(
        f"held-out MLM accuracy {metrics['mlm_accuracy']:.4f} "
        f"(unigram-frequency baseline {metrics['unigram_mlm_accuracy']:.4f}), "
        f"NSP accuracy {metrics['nsp_accuracy']:.4f}, loss {metrics['loss']:.4f} "
        f"on {int(metrics['examples'])} held-out examples"
    )
    print(f"plot:        {workdir / 'curves.png'}")
    print(f"logs:        {workdir / 'tensorboard'} (TensorBoard), {workdir / 'metrics.jsonl'}")
    print(f"checkpoints: {workdir / 'checkpoints'}")
