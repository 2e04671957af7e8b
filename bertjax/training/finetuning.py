"""Fine-tuning: the loop that every task trains through.

`finetune(config, workdir)` is four named steps. `setup`: the checkpoint named by `init`
(Hugging Face, bertjax or a run directory), the tokenizer and the task (`bertjax.tasks`) with its
encoded splits. `build`: the task's model, its optimizer and its state (born sharded, resumed
from the latest checkpoint or filled from `init`, missing heads fresh and reported) and the
compiled steps. `train`: epoch after epoch with the shared update (`update.train_step`: gradient
accumulation, the non-finite guard, clipping), the eval splits scored after each epoch, the best
parameters by the task's score kept in `<workdir>/best`, a checkpoint at each epoch end, every
`train.checkpoint_every_steps` and on SIGTERM/SIGINT. `finish`: the test splits predicted with the
best parameters, and `<workdir>/results.json`, written last, marking the run finished. With
several processes every host reads the task and feeds its share of each batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax import config as config_lib
from bertjax import fileio, tasks
from bertjax.config import FinetuneConfig, ModelConfig
from bertjax.data.pretraining import pack
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import CheckpointError, ConfigError, DataError
from bertjax.fileio import write_text_atomically
from bertjax.parallel import sharding
from bertjax.tasks.base import Split, Task, TaskData
from bertjax.training import checkpoints, logs, loop, optim, update
from bertjax.training.state import (
    TrainState,
    abstract_sharded_state,
    fresh_state,
    init_from_checkpoint,
    run_keys,
    to_host,
)
from bertjax.weights import pretrained
from bertjax.weights.param_tree import flatten, unstack_layers

PLOT_PANELS = (("loss", "train loss"), ("accuracy", "train accuracy"), ("score", "eval score"))


def objective(task: Task, model: nn.Module) -> update.Objective:
    """A task's loss as the shared update takes it."""
    return update.Objective(
        loss=functools.partial(task.loss, model=model), denominators=task.denominator, summarise=task.summarise
    )


# --------------------------------------------------------------------------------------------
# Batches


def batch_of(split: Split, rows: np.ndarray, pad_to: int, widths: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """The features of `rows`, padded with weight-0 copies of row 0 up to `pad_to` rows, and their
    `weights` (1 for real rows). With `widths` (ascending; `batch_widths`), arrays as long as the
    inputs are cut to the smallest width that holds the longest row: the padding columns they drop
    change no real position's output."""
    padded = np.concatenate([rows, np.zeros(pad_to - len(rows), rows.dtype)]) if len(rows) < pad_to else rows
    batch = {k: v[padded] for k, v in split.features.items()}
    if widths:
        length = batch["input_ids"].shape[1]
        longest = int(batch["attention_mask"].sum(1).max())
        keep = next((w for w in widths if w >= longest), length)
        batch = {k: v[:, :keep] if v.ndim > 1 and v.shape[1] == length else v for k, v in batch.items()}
    batch["weights"] = (np.arange(pad_to) < len(rows)).astype(np.float32)
    return batch


def batch_widths(maxima: np.ndarray, multiple: int, length: int, buckets: int = 0) -> tuple[int, ...]:
    """The widths batches are cut to: the multiples of `multiple` below `length`, and `length`.

    With `buckets`, at most that many of them (`length` always one): those that leave the fewest
    padding columns when each batch, whose longest rows are `maxima`, is cut to the smallest width
    that holds it (dynamic programming over the candidates). Each width is a shape to compile.
    """
    candidates = np.array([*range(multiple, length, multiple), length])
    count = len(candidates)
    if not buckets or buckets >= count or not len(maxima):
        return tuple(int(w) for w in candidates)
    # below[j]: the batches that fit a candidate before candidates[j]; those whose smallest fitting
    # candidate is one of candidates[i + 1 .. j] number below[j + 1] - below[i + 1].
    below = np.concatenate([[0], np.cumsum(np.bincount(np.searchsorted(candidates, maxima), minlength=count))])
    # columns[k, j]: the fewest columns of the batches up to candidates[j] with k widths, the largest
    # candidates[j]; previous[k, j]: the width below it.
    columns = np.full((buckets + 1, count), np.inf)
    previous = np.zeros((buckets + 1, count), int)
    columns[1] = below[1:] * candidates
    for k in range(2, buckets + 1):
        for j in range(1, count):
            options = columns[k - 1, :j] + (below[j + 1] - below[1 : j + 1]) * candidates[j]
            previous[k, j] = int(np.argmin(options))
            columns[k, j] = options[previous[k, j]]
    k, j = int(np.argmin(columns[1:, -1])) + 1, count - 1  # the fewest widths that reach the minimum
    chosen = []
    while k:
        chosen.append(int(candidates[j]))
        j, k = previous[k, j], k - 1
    return tuple(sorted(chosen))


def train_batch_maxima(
    lengths: np.ndarray, batch_size: int, seed: int, epochs: int, group_by_length: bool
) -> np.ndarray:
    """The longest row of every full training batch of `epochs` epochs (`epoch_order`)."""
    full = len(lengths) // batch_size * batch_size
    return np.concatenate(
        [
            lengths[epoch_order(lengths, batch_size, seed, epoch, group_by_length)[:full]]
            .reshape(-1, batch_size)
            .max(1)
            for epoch in range(epochs)
        ]
    )


def _slots(plan: np.ndarray, lengths: np.ndarray) -> Iterator[tuple[int, int, int, int, int]]:
    """The layout of a packed batch, shared by `packed_batch` and `unpacked`: (row, slot, item,
    first token, tokens) for each filled slot of `plan`, the items laid one after another."""
    for r, row in enumerate(plan):
        start = 0
        for slot, item in enumerate(row[row >= 0].tolist()):
            size = int(lengths[item])
            yield r, slot, item, start, size
            start += size


def packed_batch(
    split: Split, rows: np.ndarray, row_length: int, row_multiple: int, fill: dict[str, int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The examples `rows` packed one after another into rows of `row_length` tokens (best-fit
    decreasing, `pack`), with empty rows up to a multiple of `row_multiple`. Every array as long
    as the inputs is packed alike; `attention_mask` numbers each example's tokens 1, 2, ... along
    its row, so attention stays within an example and its positions restart (see BertModel): each
    token's output is the one it has alone in a padded row; `weights` is 1 on rows holding
    examples. Tokens no example holds are 0, or `fill[key]` (an ignored label). Returns the batch
    and the plan [rows, examples per row]: the example (an index into `rows`) in each slot, -1
    where empty."""
    features = split.features
    length = features["input_ids"].shape[1]
    packable = {k: v for k, v in features.items() if v.ndim > 1 and v.shape[1] == length}
    if set(packable) != set(features):
        raise ValueError(
            f"split {split.name}: only per-token features pack, not {sorted(set(features) - set(packable))}"
        )
    lengths = features["attention_mask"][rows].sum(1)
    plan = pack(lengths, row_length, len(rows))
    count = -(-len(plan) // row_multiple) * row_multiple
    batch = {k: np.full((count, row_length, *v.shape[2:]), fill.get(k, 0), v.dtype) for k, v in packable.items()}
    for r, slot, item, start, size in _slots(plan, lengths):
        for k, v in packable.items():
            batch[k][r, start : start + size] = v[rows[item], :size]
        batch["attention_mask"][r, start : start + size] = slot + 1
    plan = np.pad(plan, ((0, count - len(plan)), (0, 0)), constant_values=-1)
    batch["weights"] = (plan[:, 0] >= 0).astype(np.float32)
    return batch, plan


def unpacked(outputs: np.ndarray, plan: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
    """Per-token `outputs` [rows, row_length, ...] of a packed batch back as one row per example
    [examples, length, ...] (zeros past each example's tokens); `lengths` are the examples'."""
    result = np.zeros((len(lengths), length, *outputs.shape[2:]), outputs.dtype)
    for r, _, item, start, size in _slots(plan, lengths):
        result[item, :size] = outputs[r, start : start + size]
    return result


GROUP_BATCHES = 50  # group_by_length sorts rows by length within groups of this many batches


def epoch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> np.ndarray:
    """The rows of an epoch in training order: a new permutation keyed by (seed, epoch); the rows
    past the last full batch are not trained that epoch. Grouped by length, the rows of the full
    batches are sorted by length within groups of `GROUP_BATCHES` batches, cut into batches, and the
    batches shuffled: every batch holds rows of similar length, drawn from a random group, and the
    same rows are trained as without grouping."""
    rng = np.random.default_rng([seed, 6, epoch])
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return order
    full = len(order) // batch_size * batch_size
    group = batch_size * GROUP_BATCHES
    groups = np.split(order[:full], np.arange(group, full, group))
    grouped = np.concatenate([g[np.argsort(lengths[g], kind="stable")] for g in groups])
    batches = grouped.reshape(-1, batch_size)[rng.permutation(full // batch_size)]
    return np.concatenate([batches.reshape(-1), order[full:]])


def local_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's rows of a global batch (every host builds the same global batch)."""
    rows = loop.local_rows(np.arange(len(batch["weights"])))
    return {k: v[rows] for k, v in batch.items()}


def predict(
    predict_fn: Any,
    params: Any,
    split: Split,
    batch_size: int,
    batch_sharding: jax.sharding.NamedSharding,
    input_keys: tuple[str, ...],
    widths: tuple[int, ...] = (),
    per_token: bool = False,
    packing: int = 0,
) -> np.ndarray:
    """The model's outputs for every row of a split, in order, on every host. With `widths`, rows
    are batched shortest first and each batch is cut to the smallest width that holds its longest
    row (`batch_of`); per-token outputs are padded back (with zeros) to the split's length. With `packing`
    (a row length), the whole split is packed into rows of that many tokens (`packed_batch`),
    predicted `batch_size` rows at a time (one shape), and unpacked."""
    length = split.features["input_ids"].shape[1]
    if packing:
        packed, plan = packed_batch(split, np.arange(len(split)), packing, batch_size, {})
        outputs = []
        for start in range(0, len(packed["weights"]), batch_size):
            batch = local_batch({k: v[start : start + batch_size] for k, v in packed.items()})
            inputs = loop.to_global({k: batch[k] for k in input_keys}, batch_sharding)
            outputs.append(np.asarray(jax.device_get(predict_fn(params, inputs))))
        return unpacked(np.concatenate(outputs), plan, split.features["attention_mask"].sum(1), length)
    order = np.argsort(split.features["attention_mask"].sum(1), kind="stable") if widths else None
    outputs = []
    for start in range(0, len(split), batch_size):
        rows = np.arange(start, min(start + batch_size, len(split)))
        if order is not None:
            rows = order[rows]
        batch = local_batch(batch_of(split, rows, batch_size, widths))
        inputs = loop.to_global({k: batch[k] for k in input_keys}, batch_sharding)
        out = np.asarray(jax.device_get(predict_fn(params, inputs)))[: len(rows)]
        if per_token and out.shape[1] < length:
            out = np.pad(out, [(0, 0), (0, length - out.shape[1])] + [(0, 0)] * (out.ndim - 2))
        outputs.append(out)
    result = np.concatenate(outputs)
    if order is None:
        return result
    restored = np.empty_like(result)
    restored[order] = result
    return restored


# --------------------------------------------------------------------------------------------
# Setup


def resolve_model(config: FinetuneConfig) -> tuple[ModelConfig, pretrained.Pretrained | None]:
    """The model config: the checkpoint's shape with this config's dropout and dtypes."""
    if not config.init:
        return config.model, None
    checkpoint = pretrained.load(config.init)
    return pretrained.model_config_for_run(checkpoint, config.model), checkpoint


@dataclasses.dataclass
class Setup:
    """What the loop is given: the model's config and tokenizer files, the task and its data."""

    model_config: ModelConfig
    checkpoint: pretrained.Pretrained | None
    vocab_file: str
    lowercase: bool
    task: Task
    data: TaskData


def setup(config: FinetuneConfig) -> Setup:
    """The checkpoint, the tokenizer and the task's encoded splits, checked against each other."""
    task_cfg, train_cfg = config.task, config.train
    model_config, checkpoint = resolve_model(config)
    vocab_file = task_cfg.vocab_file or (str(checkpoint.vocab_file) if checkpoint and checkpoint.vocab_file else "")
    if not vocab_file:
        raise ConfigError("config key task.vocab_file is empty and the checkpoint has no vocab.txt or tokenizer.json")
    lowercase = checkpoint.lowercase if checkpoint and not task_cfg.vocab_file else task_cfg.lowercase
    tokenizer = load_tokenizer(vocab_file, lowercase)
    if checkpoint is not None:
        pretrained.check_vocab(checkpoint, tokenizer.get_vocab_size(), vocab_file)
    elif tokenizer.get_vocab_size() != model_config.vocab_size:
        raise ConfigError(
            f"config key model.vocab_size={model_config.vocab_size} but the vocab {vocab_file} has "
            f"{tokenizer.get_vocab_size()} tokens"
        )
    if task_cfg.max_seq_length > model_config.max_length:
        raise ConfigError(
            f"config key task.max_seq_length={task_cfg.max_seq_length} exceeds the model's "
            f"max_position_embeddings={model_config.max_position_embeddings}"
            + (f" less its position_offset={model_config.position_offset}" if model_config.position_offset else "")
        )
    task = tasks.from_config(task_cfg, train_cfg.seed)
    if task_cfg.packing and not task.packable:
        raise ConfigError(
            f"config key task.packing: task {task_cfg.name!r} has features per example; only token "
            "classification (ner) packs its examples into shared rows"
        )
    data = task.load(tokenizer, task_cfg.max_seq_length)
    if len(data.train) < train_cfg.batch_size:
        raise DataError(
            f"{data.train.source}: {len(data.train)} examples, fewer than one batch of {train_cfg.batch_size}"
        )
    return Setup(model_config, checkpoint, vocab_file, lowercase, task, data)


def param_init(task: Task, model: nn.Module, max_seq_length: int) -> Any:
    """The task model's init as a function of a key: its (boxed) parameters."""
    dummy = jnp.zeros((1, max_seq_length), jnp.int32)

    def init(key: jax.Array) -> Any:
        return model.init({"params": key}, *(dummy for _ in task.input_keys))["params"]

    return init


def check_batch_sizes(config: FinetuneConfig, mesh: jax.sharding.Mesh) -> None:
    """Batches split evenly over the processes, the accumulation steps and the devices."""
    train_cfg, accum, devices = config.train, config.optim.grad_accum_steps, mesh.devices.size
    if train_cfg.batch_size % (accum * devices):
        raise ConfigError(
            f"config key train.batch_size={train_cfg.batch_size} does not divide into optim.grad_accum_steps="
            f"{accum} microbatches over the {devices} devices"
        )
    if train_cfg.eval_batch_size % devices:
        raise ConfigError(
            f"config key train.eval_batch_size={train_cfg.eval_batch_size} does not divide over the {devices} devices"
        )


def _save_best(best: pretrained.Pretrained, workdir: Path) -> None:
    """<workdir>/best replaced by `best` only once the new one is completely written."""
    final, fresh, old = workdir / "best", workdir / ".best-new", workdir / ".best-old"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    pretrained.save(best, fresh)
    if final.exists():
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass
class Progress:
    """What a run has done so far, as each of its checkpoints records it."""

    step: int = 0
    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_index: int | None = None
    best_params: Any = None  # the best epoch's parameters, on the host
    load_report: dict[str, Any] | None = None
    skipped_steps: int = 0

    def record(self, step: int) -> dict[str, Any]:
        """The JSON part of a checkpoint at `step`."""
        keys = ("epochs", "best_index", "load_report", "skipped_steps")
        return {"step": step} | {k: getattr(self, k) for k in keys}

    def add_epoch(self, record: dict[str, Any], main_split: str, params: Any) -> bool:
        """Appends an epoch's record; keeps `params` (fetched only then) if its score is the best so far."""
        self.epochs.append(record)
        best = self.epochs[self.best_index][main_split]["score"] if self.best_index is not None else None
        if best is not None and record[main_split]["score"] <= best:
            return False
        self.best_index, self.best_params = len(self.epochs) - 1, to_host(params())
        return True


@dataclasses.dataclass
class Run:
    """One fine-tuning run's parts: its setup, compiled steps and where it writes."""

    config: FinetuneConfig
    setup: Setup
    workdir: Path
    mesh: jax.sharding.Mesh
    shardings: Any
    train_step: Any
    dropout_rng: jax.Array
    predict_split: Any
    batch_sharding: jax.sharding.NamedSharding
    steps_per_epoch: int
    total_steps: int
    manager: Any
    writer: logs.Writer
    widths: tuple[int, ...] = ()  # what unpacked batches are cut to (`batch_widths`); () = not cut

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    @property
    def row_multiple(self) -> int:
        """Packed batches have a multiple of this many rows: the microbatches over the devices."""
        return self.config.optim.grad_accum_steps * self.mesh.devices.size


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a run is made of before any array exists: the task model, its optimizer, the abstract
    sharded state, and the jitted (not yet compiled) train and predict steps. `train_step` is one
    jitted function (what `bertjax.preflight` compiles); `loop_step`, what the training loop runs,
    is the same unless batches come in several shapes (cut to their longest row, or packed): then
    the gradient is compiled per shape and the update once (`update.compile_train_step`'s
    `update_apart`)."""

    model: nn.Module
    tx: Any
    init_params: Any
    abstract: TrainState
    shardings: Any
    train_step: Any
    loop_step: Any
    predict_fn: Any
    steps_per_epoch: int
    total_steps: int


def parts(config: FinetuneConfig, run_setup: Setup, mesh: jax.sharding.Mesh, init_rng: jax.Array) -> Parts:
    """The run's model, optimizer, abstract state and steps on `mesh` (`bertjax.preflight`
    compiles these for a topology without running them)."""
    train_cfg, task = config.train, run_setup.task
    steps_per_epoch = len(run_setup.data.train) // train_cfg.batch_size
    total_steps = max(1, round(train_cfg.num_epochs * steps_per_epoch))
    check_batch_sizes(config, mesh)
    model = task.model(run_setup.model_config)
    tx, schedule = optim.make_optimizer(config.optim, total_steps)
    init_params = param_init(task, model, config.task.max_seq_length)
    abstract, shardings = abstract_sharded_state(init_rng, init_params, tx, mesh, config.mesh)
    step_parts = (objective(task, model), tx, schedule, shardings, mesh, config.optim.grad_accum_steps)
    train_step = update.compile_train_step(*step_parts)
    shapes_vary = bool(config.task.packing or config.task.pad_to_multiple_of)
    loop_step = update.compile_train_step(*step_parts, update_apart=True) if shapes_vary else train_step
    predict_fn = jax.jit(
        functools.partial(task.predict, model=model),
        in_shardings=(shardings.params, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
    )
    return Parts(
        model, tx, init_params, abstract, shardings, train_step, loop_step, predict_fn, steps_per_epoch, total_steps
    )


def run_widths(config: FinetuneConfig, train: Split, total_steps: int, steps_per_epoch: int) -> tuple[int, ...]:
    """The widths a run's unpacked batches are cut to: multiples of `task.pad_to_multiple_of`, at most
    `task.length_buckets` of them fitted to the run's training batches (`batch_widths`)."""
    task_cfg, train_cfg = config.task, config.train
    if not task_cfg.pad_to_multiple_of or task_cfg.packing:
        return ()
    lengths = train.features["attention_mask"].sum(1)
    maxima = np.zeros(0, lengths.dtype)
    if task_cfg.length_buckets:
        epochs = -(-total_steps // max(steps_per_epoch, 1))
        maxima = train_batch_maxima(lengths, train_cfg.batch_size, train_cfg.seed, epochs, train_cfg.group_by_length)
    length = train.features["input_ids"].shape[1]
    return batch_widths(maxima, task_cfg.pad_to_multiple_of, length, task_cfg.length_buckets)


def build(config: FinetuneConfig, run_setup: Setup, workdir: Path) -> tuple[Run, TrainState, Progress]:
    """The model, its optimizer and its state (born sharded, then resumed from the latest
    checkpoint or filled from init), and the compiled train and predict steps."""
    train_cfg, task, is_main = config.train, run_setup.task, jax.process_index() == 0
    mesh = sharding.make_mesh(config.mesh)
    init_rng, dropout_rng = run_keys(train_cfg.seed)
    made = parts(config, run_setup, mesh, init_rng)
    tx, init_params, abstract, shardings = made.tx, made.init_params, made.abstract, made.shardings
    # The latest checkpoint holds the state, the progress and the best epoch's parameters.
    manager = checkpoints.manager(workdir / "checkpoints", 1, trees=("best_params",))
    state, saved, trees = checkpoints.restore_latest(manager, abstract, best_params=abstract.params)
    progress = Progress(
        step=int(saved.get("step", 0)),
        epochs=list(saved.get("epochs", [])),
        best_index=saved.get("best_index"),
        best_params=to_host(trees["best_params"]) if saved.get("best_index") is not None else None,
        load_report=saved.get("load_report"),
        skipped_steps=int(saved.get("skipped_steps", 0)),
    )
    if not saved:  # a new run: the pretrained encoder (and fresh heads), or everything fresh
        if run_setup.checkpoint is not None:
            state, report = init_from_checkpoint(
                init_rng, init_params, abstract, run_setup.checkpoint, tx, mesh, config.mesh, is_main
            )
            progress.load_report = dataclasses.asdict(report)
        else:
            state = fresh_state(init_rng, init_params, tx, shardings, mesh, config.mesh)

    batch_sharding = sharding.batch_sharding(mesh)
    widths = run_widths(config, run_setup.data.train, made.total_steps, made.steps_per_epoch)
    run = Run(
        config=config,
        setup=run_setup,
        workdir=workdir,
        mesh=mesh,
        shardings=shardings,
        train_step=made.loop_step,
        dropout_rng=dropout_rng,
        predict_split=functools.partial(
            predict,
            made.predict_fn,
            batch_size=train_cfg.eval_batch_size,
            batch_sharding=batch_sharding,
            input_keys=task.input_keys,
            widths=widths,
            per_token=task.per_token,
            packing=config.task.max_seq_length if config.task.packing else 0,
        ),
        batch_sharding=batch_sharding,
        steps_per_epoch=made.steps_per_epoch,
        total_steps=made.total_steps,
        manager=manager,
        writer=logs.Writer(workdir, enabled=is_main),
        widths=widths,
    )
    if is_main:
        num_params = sum(x.size for x in jax.tree.leaves(state.params))
        run.writer.write_config(config_lib.to_dict(config), num_params, Path(run_setup.vocab_file))
        cut = f"; batches cut to widths {'/'.join(map(str, widths))}" if config.task.length_buckets else ""
        print(
            task.describe(run_setup.data, config.task.max_seq_length)
            + f"; {made.total_steps} steps of {train_cfg.batch_size}{cut}"
        )
    return run, state, progress


def save_best(run: Run, progress: Progress) -> None:
    """The best epoch's parameters as a bertjax model checkpoint in <workdir>/best (process 0)."""
    if not run.is_main:
        return
    s = run.setup
    params = unstack_layers(flatten(progress.best_params))
    best = pretrained.Pretrained(
        s.model_config, params, Path(s.vocab_file), s.lowercase, "bertjax", run.workdir / "best", s.task.labels
    )
    _save_best(best, run.workdir)


def save_checkpoint(run: Run, state: TrainState, progress: Progress, step: int) -> None:
    best = progress.best_params if progress.best_params is not None else state.params  # a placeholder
    checkpoints.save(run.manager, step, state, progress.record(step), best_params=best)


def evaluate_epoch(run: Run, state: TrainState, step: int) -> dict[str, Any]:
    """The eval splits' metrics at the end of an epoch, logged."""
    record: dict[str, Any] = {"epoch": round(step / run.steps_per_epoch, 3), "step": step}
    for name, split in run.setup.data.evals.items():
        record[name] = run.setup.task.evaluate(split, run.predict_split(state.params, split))
        run.writer.write_scalars(step, name, record[name])
    return record


def train(run: Run, state: TrainState, progress: Progress) -> int | None:
    """Trains from `progress.step` to the end, an epoch's evaluation and checkpoint at each epoch end;
    returns the step a signal stopped the run at, or None when it finished."""
    train_cfg, task_cfg, data, task = run.config.train, run.config.task, run.setup.data, run.setup.task
    bar = logs.progress_bar(progress.step, run.total_steps, enabled=run.is_main)
    train_log = loop.TrainLog(
        train_cfg.nonfinite, jax.devices()[0].device_kind, run.setup.model_config.dtype, progress.skipped_steps
    )
    order_epoch, order = -1, np.arange(0)
    lengths = data.train.features["attention_mask"].sum(1)
    stopped_at = None
    rules = sharding.rules(run.config.mesh)
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(rules), loop.StopSignal(run.mesh) as stop_signal:
        for step in range(progress.step, run.total_steps):
            epoch, row = divmod(step * train_cfg.batch_size, run.steps_per_epoch * train_cfg.batch_size)
            if epoch != order_epoch:
                order_epoch = epoch
                order = epoch_order(lengths, train_cfg.batch_size, train_cfg.seed, epoch, train_cfg.group_by_length)
            rows = order[row : row + train_cfg.batch_size]
            if task_cfg.packing:
                batch, _ = packed_batch(
                    data.train, rows, task_cfg.max_seq_length, run.row_multiple, task.feature_padding
                )
            else:
                batch = batch_of(data.train, rows, len(rows), run.widths)
            state, metrics = run.train_step(
                state, loop.to_global(local_batch(batch), run.batch_sharding), run.dropout_rng
            )
            # Batches are cut to their longest row: FLOPs are counted per batch.
            flops = len(batch["weights"]) * run.setup.model_config.train_flops(batch["input_ids"].shape[1])
            train_log.add(metrics, len(rows), flops)
            done = step + 1
            if done % train_cfg.log_every_steps == 0 or done == run.total_steps:
                summary = train_log.flush(done, run.manager, bar)
                run.writer.write_scalars(done, "train", summary)
                bar.set_postfix(loss=f"{summary['loss']:.4f}")
            progress.skipped_steps = train_log.skipped_steps
            bar.update(1)
            end_of_epoch = done % run.steps_per_epoch == 0 or done == run.total_steps
            stop = stop_signal.agreed()
            if not end_of_epoch:
                every = train_cfg.checkpoint_every_steps
                if stop or (every and done % every == 0):
                    save_checkpoint(run, state, progress, done)
                if stop:
                    stopped_at = done
                    break
                continue
            train_log.pause()  # evaluation is not training throughput
            record = evaluate_epoch(run, state, done)
            improved = progress.add_epoch(record, data.main_split, lambda state=state: state.params)
            # The checkpoint (with the best parameters) is complete before best/ changes, so best/
            # is never ahead of what a resumed run knows.
            save_checkpoint(run, state, progress, done)
            run.manager.wait_until_finished()
            if improved:
                save_best(run, progress)
            bar.write(
                f"epoch {record['epoch']}: "
                + "; ".join(f"{n} " + ", ".join(f"{k} {v:.4f}" for k, v in record[n].items()) for n in data.evals)
            )
            train_log.resume()
            if stop and done < run.total_steps:
                stopped_at = done
                break
    bar.close()
    run.manager.wait_until_finished()
    run.manager.close()
    return stopped_at


def finish(run: Run, progress: Progress) -> dict[str, Any]:
    """Predicts the test splits with the best parameters and writes results.json (the run is then
    finished; its checkpoint goes unless train.keep_checkpoint)."""
    assert progress.best_index is not None and progress.best_params is not None
    task, data, workdir = run.setup.task, run.setup.data, run.workdir
    results: dict[str, Any] = {
        "task": task.name,
        "published": task.published,
        "init": run.config.init,
        "load_report": progress.load_report,
        "main_split": data.main_split,
        "epochs": progress.epochs,
        "best": progress.epochs[progress.best_index],
        "test": {},
        "prediction_files": [],
    }
    best_on_mesh = jax.device_put(progress.best_params, run.shardings.params)
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(sharding.rules(run.config.mesh)):
        for name, split in data.tests.items():
            outputs = run.predict_split(best_on_mesh, split)
            if split.labelled:
                results["test"][name] = task.evaluate(split, outputs)
            if run.is_main:
                results["prediction_files"].append(str(task.write_predictions(split, outputs, workdir)))
    if run.is_main:
        run.writer.plot_curves(panels=PLOT_PANELS)
        write_text_atomically(workdir / "results.json", json.dumps(results, indent=2))
        if not run.config.train.keep_checkpoint:  # finished: nothing resumes from it (best/ is the model)
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    return results


# --------------------------------------------------------------------------------------------
# The loop


def finetune(config: FinetuneConfig, workdir: str | Path) -> dict[str, Any]:
    """Fine-tunes as `config` says; returns (and writes to results.json) the run's results. Bad
    input found before the first checkpoint leaves `workdir` as it was (`fileio.run_directory`)."""
    workdir = Path(workdir)
    fileio.check_writable_folder(workdir, "workdir")
    if config.task.glue_dir and not Path(config.task.glue_dir).is_dir():
        raise ConfigError(f"config key task.glue_dir: {config.task.glue_dir} is not a folder")
    results_file = workdir / "results.json"
    if results_file.is_file():
        print(f"{workdir} holds a finished run: {results_file}")
        return json.loads(results_file.read_text())
    if (workdir / "best").exists() and not (workdir / "checkpoints").exists():
        raise CheckpointError(
            f"workdir {workdir} holds best/ without results.json or checkpoints/ to resume from: use another"
        )
    with fileio.run_directory(workdir):
        run, state, progress = build(config, setup(config), workdir)
        if progress.best_params is not None:
            save_best(run, progress)  # best/ as the checkpoint has it (a run stopped between the two)
        stopped_at = train(run, state, progress)
        results = {"stopped_at_step": stopped_at} if stopped_at is not None else finish(run, progress)
        run.writer.close()
        return results


def print_summary(results: dict[str, Any], workdir: str | Path) -> None:
    if "stopped_at_step" in results:
        loop.print_stopped(results["stopped_at_step"], workdir)
        return
    best = results["best"]
    main = results["main_split"]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best[main].items())
    print(f"best epoch {best['epoch']} ({main}): {shown}")
    for name, values in results["test"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if results.get("published"):
        print(f"published: {results['published']}")
    for path in results["prediction_files"]:
        print(f"predictions: {path}")
    print(f"best checkpoint: {Path(workdir) / 'best'}")
