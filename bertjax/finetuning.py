"""Fine-tuning BERT on a labelled text set: GLUE or any classification / regression task.

The flow of `finetune(config, workdir)`, flat: load the checkpoint named by `init` (Hugging Face,
bertjax or a run directory), read and encode the task's splits once, build a
`BertForSequenceClassification` whose encoder comes from the checkpoint (missing heads are
initialised fresh and reported), then train with the jitted `classifier_step` epoch after epoch,
evaluate on the dev split(s) after each, keep the best parameters by the task's score as a
bertjax model checkpoint in `<workdir>/best`, and finally predict the test split(s) with them:
GLUE leaderboard files in `<workdir>/submission/`, other tasks in `<workdir>/predictions/`.
`<workdir>/results.json`, written last, marks the run finished.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertjax import checkpoint as checkpointing
from bertjax import config as config_lib
from bertjax import fileio, glue, metrics, optim, pretrained, reporting, sharding, train
from bertjax.config import FinetuneConfig, ModelConfig, TaskConfig
from bertjax.data import labelled
from bertjax.data.labelled import Encoded, Examples, Layout, TaskSpec
from bertjax.errors import CheckpointError, ConfigError, DataError
from bertjax.fileio import write_text_atomically
from bertjax.hf_weights import flatten, unstack_layers
from bertjax.model import BertForSequenceClassification
from bertjax.tokenizer import load_tokenizer
from bertjax.train import TrainState

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


# --------------------------------------------------------------------------------------------
# The task's data


@dataclasses.dataclass
class TaskData:
    """A task and its splits: train, the eval splits (the first selects the best epoch), tests."""

    spec: TaskSpec
    train: Examples
    evals: dict[str, Examples]
    tests: dict[str, Examples]
    glue_task: glue.GlueTask | None = None


def custom_spec(task: TaskConfig) -> TaskSpec:
    """The TaskSpec of a task described in the config (labels may still be empty: discovered)."""
    layout = Layout(task.text_a, task.text_b, task.label, task.index, task.header, task.skip_rows)
    unknown = [m for m in task.metrics if m not in metrics.METRICS]
    if unknown:
        raise ConfigError(
            f"config key task.metrics: unknown metric {unknown[0]!r} (known: {', '.join(metrics.METRICS)})"
        )
    return TaskSpec(
        name=Path(task.train_file).stem if task.train_file else task.tfds_name or "custom",
        kind=task.kind,
        labels=tuple(task.labels),
        metrics=tuple(task.metrics),
        layouts={"train": layout, "dev": layout, "test": layout},
    )


def _discover_labels(spec: TaskSpec, task: TaskConfig) -> TaskSpec:
    """The sorted label strings of the training split, for a classification task that names none."""
    if spec.kind == "regression" or spec.labels:
        return spec
    layout = spec.layouts["train"]
    if task.train_file:
        found = labelled.label_strings(task.train_file, layout, task.file_format)
    else:
        raise ConfigError("config key task.labels: a TFDS custom task must list its labels")
    return dataclasses.replace(spec, labels=tuple(sorted(found)))


def load_task(task: TaskConfig, seed: int) -> TaskData:
    """Reads every split of the task named in the config."""
    if task.name != "custom":
        glue_task = glue.get_task(task.name)
        spec = glue_task.spec
        read = functools.partial(glue.read_split, glue_task, data_dir=task.glue_dir, tfds_data_dir=task.tfds_data_dir)
        train = read("train")
        evals = {split: read(split) for split in spec.eval_splits}
        tests = {}
        for split in spec.test_splits:
            try:
                tests[split] = read(split)
            except DataError as e:
                if "does not exist" not in str(e):
                    raise
                print(f"note: no {split} split ({e}); no predictions for it")
        return TaskData(spec, train, evals, tests, glue_task)

    spec = _discover_labels(custom_spec(task), task)
    layout = spec.layouts["train"]
    if task.train_file:

        def read(path: str) -> Examples:
            return labelled.read_file(path, spec, layout, task.file_format)

        train = read(task.train_file)
        dev = read(task.dev_file) if task.dev_file else None
        test = read(task.test_file) if task.test_file else None
    elif task.tfds_name:

        def read_split(split: str) -> Examples:
            return labelled.read_tfds(task.tfds_name, split, spec, layout, task.tfds_data_dir)

        train = read_split(task.tfds_train_split)
        dev = read_split(task.tfds_dev_split) if task.tfds_dev_split else None
        test = read_split(task.tfds_test_split) if task.tfds_test_split else None
    else:
        raise ConfigError("config: a custom task needs task.train_file or task.tfds_name")
    if dev is None:
        if task.dev_fraction <= 0:
            raise ConfigError("config: the task has no dev split: set task.dev_file or task.dev_fraction")
        train, dev = labelled.split_off(train, task.dev_fraction, seed)
    return TaskData(spec, train, {"dev": dev}, {"test": test} if test is not None else {})


# --------------------------------------------------------------------------------------------
# The steps


def classifier_loss(
    params: Any, batch: dict[str, jax.Array], rng: jax.Array | None, model: nn.Module, regression: bool
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy (or squared error for regression) over the rows with weight 1."""
    deterministic = rng is None
    logits = model.apply(
        {"params": params},
        *(batch[k] for k in INPUT_KEYS),
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": rng},
    )
    weights = batch["weights"]
    count = jnp.maximum(weights.sum(), 1.0)
    if regression:
        per_row = jnp.square(logits[:, 0] - batch["labels"])
        hits = jnp.zeros_like(per_row)
    else:
        labels = batch["labels"].astype(jnp.int32)
        per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        hits = (logits.argmax(-1) == labels).astype(jnp.float32)
    loss = (per_row * weights).sum() / count
    return loss, {"loss": loss, "accuracy": (hits * weights).sum() / count}


def classifier_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    regression: bool,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on a batch of labelled examples (dropout keyed by the step)."""
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.grad(classifier_loss, has_aux=True)
    grads, step_metrics = grad_fn(state.params, batch, step_rng, model, regression)
    params, opt_state = train.apply_update(tx, grads, state.params, state.opt_state)
    step_metrics["grad_norm"] = optax.global_norm(grads)
    step_metrics["learning_rate"] = schedule(state.step)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), step_metrics


def predict_logits(params: Any, batch: dict[str, jax.Array], *, model: nn.Module) -> jax.Array:
    return model.apply({"params": params}, *(batch[k] for k in INPUT_KEYS))


def _rows(encoded: Encoded, rows: np.ndarray, pad_to: int, multiple: int = 0) -> dict[str, np.ndarray]:
    """The batch of `rows`, padded with weight-0 copies of row 0 up to `pad_to` rows. With
    `multiple`, the columns are cut to the longest row rounded up to a multiple of it: the
    padding columns they drop change no real position's output."""
    padded = np.concatenate([rows, np.zeros(pad_to - len(rows), rows.dtype)]) if len(rows) < pad_to else rows
    batch = {k: getattr(encoded, k)[padded] for k in INPUT_KEYS}
    if multiple:
        longest = int(batch["attention_mask"].sum(1).max())
        keep = min(-(-longest // multiple) * multiple, batch["input_ids"].shape[1])
        batch = {k: v[:, :keep] for k, v in batch.items()}
    labels = encoded.labels if encoded.labels is not None else np.zeros(len(encoded), np.float32)
    batch["labels"] = labels[padded].astype(np.float32)
    batch["weights"] = (np.arange(pad_to) < len(rows)).astype(np.float32)
    return batch


def predict(
    predict_fn: Any,
    params: Any,
    encoded: Encoded,
    batch_size: int,
    batch_sharding: jax.sharding.NamedSharding,
    pad_to_multiple_of: int = 0,
) -> np.ndarray:
    """Logits of every example of a split, in order."""
    outputs = []
    for start in range(0, len(encoded), batch_size):
        rows = np.arange(start, min(start + batch_size, len(encoded)))
        batch = _rows(encoded, rows, batch_size, pad_to_multiple_of)
        batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items() if k in INPUT_KEYS}
        outputs.append(np.asarray(jax.device_get(predict_fn(params, batch)))[: len(rows)])
    return np.concatenate(outputs)


def to_predictions(logits: np.ndarray, spec: TaskSpec) -> np.ndarray:
    return logits[:, 0] if spec.kind == "regression" else logits.argmax(-1)


def evaluate_split(spec: TaskSpec, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The task's metrics, plus its single score."""
    values = metrics.compute(spec.metrics, labels, predictions)
    values["score"] = spec.score(values)
    return values


# --------------------------------------------------------------------------------------------
# Outputs


def write_predictions(path: Path, ids: list[str], cells: list[str]) -> None:
    """A leaderboard-style TSV: header `index<TAB>prediction`, one row per example."""
    rows = [f"{i}\t{c}" for i, c in zip(ids, cells)]
    write_text_atomically(path, "index\tprediction\n" + "\n".join(rows) + "\n")


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


# --------------------------------------------------------------------------------------------
# The loop


def resolve_model(config: FinetuneConfig) -> tuple[ModelConfig, pretrained.Pretrained | None]:
    """The model config: the checkpoint's shape with this config's dropout and dtypes."""
    if not config.init:
        return config.model, None
    checkpoint = pretrained.load(config.init)
    return pretrained.model_config_for_run(checkpoint, config.model), checkpoint


def finetune(config: FinetuneConfig, workdir: str | Path) -> dict[str, Any]:
    """Fine-tunes as `config` says; returns (and writes to results.json) the run's results. A run
    that fails before its first checkpoint leaves no `checkpoints/` directory behind, nor a workdir
    that it created and left empty."""
    workdir = Path(workdir)
    with fileio.folders_removed_on_failure(workdir / "checkpoints"):
        return _finetune(config, workdir)


def _finetune(config: FinetuneConfig, workdir: Path) -> dict[str, Any]:
    results_file = workdir / "results.json"
    if results_file.is_file():
        print(f"{workdir} holds a finished run: {results_file}")
        return json.loads(results_file.read_text())
    if (workdir / "best").exists() and not (workdir / "checkpoints").exists():
        raise CheckpointError(
            f"workdir {workdir} holds best/ without results.json or checkpoints/ to resume from: use another"
        )
    is_main = jax.process_index() == 0
    train_cfg, task_cfg = config.train, config.task

    model_config, checkpoint = resolve_model(config)
    vocab_file = task_cfg.vocab_file or (checkpoint.vocab_file if checkpoint else None)
    if not vocab_file:
        raise ConfigError("config key task.vocab_file is empty and the checkpoint has no vocab.txt")
    lowercase = checkpoint.lowercase if checkpoint and not task_cfg.vocab_file else task_cfg.lowercase
    tokenizer = load_tokenizer(vocab_file, lowercase)
    if checkpoint is not None:
        pretrained.check_vocab(checkpoint, tokenizer.get_vocab_size(), vocab_file)
    elif tokenizer.get_vocab_size() != model_config.vocab_size:
        raise ConfigError(
            f"config key model.vocab_size={model_config.vocab_size} but the vocab {vocab_file} has "
            f"{tokenizer.get_vocab_size()} tokens"
        )
    if task_cfg.max_seq_length > model_config.max_position_embeddings:
        raise ConfigError(
            f"config key task.max_seq_length={task_cfg.max_seq_length} exceeds the model's "
            f"max_position_embeddings={model_config.max_position_embeddings}"
        )

    data = load_task(task_cfg, train_cfg.seed)
    spec = data.spec
    encode = functools.partial(labelled.encode, tokenizer=tokenizer, max_seq_length=task_cfg.max_seq_length)
    train_set = encode(data.train)
    eval_sets = {name: encode(split) for name, split in data.evals.items()}
    test_sets = {name: encode(split) for name, split in data.tests.items()}
    if len(train_set) < train_cfg.batch_size:
        raise DataError(
            f"{data.train.source}: {len(train_set)} examples, fewer than one batch of {train_cfg.batch_size}"
        )

    steps_per_epoch = len(train_set) // train_cfg.batch_size
    total_steps = max(1, round(train_cfg.num_epochs * steps_per_epoch))
    mesh = sharding.make_mesh(config.mesh)
    if train_cfg.batch_size % mesh.devices.size or train_cfg.eval_batch_size % mesh.devices.size:
        raise ConfigError(f"config: batch sizes must divide over the {mesh.devices.size} devices")
    model = BertForSequenceClassification(model_config, spec.num_labels)
    tx, schedule = optim.make_optimizer(config.optim, total_steps)

    # Parameters: fresh (sharded) init, then the checkpoint's values where it has them.
    rng = jax.random.key(train_cfg.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, task_cfg.max_seq_length), jnp.int32)

    def init(key: jax.Array) -> TrainState:
        params = model.init({"params": key}, dummy, dummy, dummy)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    shardings = sharding.state_shardings(jax.eval_shape(init, init_rng), mesh, config.mesh)
    rules = sharding.rules(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(lambda k: nn.meta.unbox(init(k)), out_shardings=shardings)(init_rng)
    # Resume: the latest checkpoint holds the state, the epochs so far and the best epoch's parameters.
    manager = checkpointing.manager(workdir / "checkpoints", 1, trees=("best_params",))
    state, saved, trees = checkpointing.restore_latest(manager, state, best_params=state.params)
    first_step = int(saved.get("step", 0))
    epochs: list[dict[str, Any]] = list(saved.get("epochs", []))
    best_index: int | None = saved.get("best_index")
    best_params = jax.device_get(trees["best_params"]) if best_index is not None else None
    load_report = saved.get("load_report")
    if checkpoint is not None and first_step == 0:
        state, report = train.init_from_checkpoint(state, checkpoint, tx, shardings, is_main)
        load_report = dataclasses.asdict(report)

    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    step_fn = jax.jit(
        functools.partial(classifier_step, model=model, tx=tx, schedule=schedule, regression=spec.kind == "regression"),
        in_shardings=(shardings, batch_sharding, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    predict_fn = jax.jit(
        functools.partial(predict_logits, model=model),
        in_shardings=(shardings.params, batch_sharding),
        out_shardings=replicated,
    )
    predict_split = functools.partial(
        predict,
        predict_fn,
        batch_size=train_cfg.eval_batch_size,
        batch_sharding=batch_sharding,
        pad_to_multiple_of=task_cfg.pad_to_multiple_of,
    )

    writer = reporting.Writer(workdir, enabled=is_main)
    if is_main:
        writer.write_config(
            config_lib.to_dict(config), sum(x.size for x in jax.tree.leaves(state.params)), Path(vocab_file)
        )
        print(
            f"{spec.name}: {len(train_set)} train examples ({train_set.truncated} truncated to "
            f"{task_cfg.max_seq_length} tokens), {total_steps} steps of {train_cfg.batch_size}; "
            + ", ".join(f"{name} {len(split)}" for name, split in eval_sets.items())
        )

    def save_best() -> None:
        _save_best(
            pretrained.Pretrained(
                model_config,
                unstack_layers(flatten(best_params)),
                Path(vocab_file),
                lowercase,
                "bertjax",
                workdir / "best",
                spec.labels,
            ),
            workdir,
        )

    def save_checkpoint(done: int) -> None:
        progress_record = {"step": done, "epochs": epochs, "best_index": best_index, "load_report": load_report}
        best_tree = best_params if best_params is not None else state.params  # a placeholder
        checkpointing.save(manager, done, state, progress_record, best_params=best_tree)

    if best_params is not None and is_main:
        save_best()  # best/ as the checkpoint has it (a run stopped between the two leaves them apart)
    progress = reporting.progress_bar(first_step, total_steps, enabled=is_main)
    pending: list[dict[str, jax.Array]] = []
    main_eval = spec.eval_splits[0] if spec.eval_splits[0] in eval_sets else next(iter(eval_sets))
    datasheet = reporting.DATASHEET_TFLOPS.get((jax.devices()[0].device_kind, model_config.dtype))
    window_start, window_rows, window_flops = time.perf_counter(), 0, 0.0
    order_epoch, order = -1, np.arange(0)
    stopped_at = None
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), train.StopSignal(mesh) as stop_signal:
        for step in range(first_step, total_steps):
            epoch, row = divmod(step * train_cfg.batch_size, steps_per_epoch * train_cfg.batch_size)
            if epoch != order_epoch:  # a new order each epoch, keyed by (seed, epoch); the remainder is dropped
                order_epoch, order = (
                    epoch,
                    np.random.default_rng([train_cfg.seed, 6, epoch]).permutation(len(train_set)),
                )
            rows = order[row : row + train_cfg.batch_size]
            batch = {
                k: jax.device_put(v, batch_sharding)
                for k, v in _rows(train_set, rows, len(rows), task_cfg.pad_to_multiple_of).items()
            }
            state, step_metrics = step_fn(state, batch, dropout_rng)
            pending.append(step_metrics)
            window_rows += len(rows)  # batches are cut to their longest row: FLOPs counted per batch
            window_flops += len(rows) * model_config.train_flops(batch["input_ids"].shape[1])
            done = step + 1
            if done % train_cfg.log_every_steps == 0 or done == total_steps:
                fetched = jax.device_get(pending)
                pending = []
                summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                seconds = time.perf_counter() - window_start
                summary["seq_per_second"] = window_rows / seconds
                summary |= reporting.throughput(
                    window_flops / window_rows, window_rows / seconds, jax.device_count(), datasheet
                )
                window_start, window_rows, window_flops = time.perf_counter(), 0, 0.0
                writer.write_scalars(done, "train", summary)
                progress.set_postfix(loss=f"{summary['loss']:.4f}")
            progress.update(1)
            end_of_epoch = done % steps_per_epoch == 0 or done == total_steps
            stop = stop_signal.agreed()
            if not end_of_epoch:
                every = train_cfg.checkpoint_every_steps
                if stop or (every and done % every == 0):
                    save_checkpoint(done)
                if stop:
                    stopped_at = done
                    break
                continue
            evaluation_started = time.perf_counter()
            record: dict[str, Any] = {"epoch": round(done / steps_per_epoch, 3), "step": done}
            for name, split in eval_sets.items():
                logits = predict_split(state.params, split)
                record[name] = evaluate_split(spec, split.labels, to_predictions(logits, spec))
                writer.write_scalars(done, name, record[name])
            epochs.append(record)
            improved = best_index is None or record[main_eval]["score"] > epochs[best_index][main_eval]["score"]
            if improved:
                best_index, best_params = len(epochs) - 1, jax.device_get(state.params)
            # The checkpoint (with the best parameters) is complete before best/ changes, so best/
            # is never ahead of what a resumed run knows.
            save_checkpoint(done)
            manager.wait_until_finished()
            if improved and is_main:
                save_best()
            progress.write(
                f"epoch {record['epoch']}: "
                + "; ".join(f"{n} " + ", ".join(f"{k} {v:.4f}" for k, v in record[n].items()) for n in eval_sets)
            )
            window_start += time.perf_counter() - evaluation_started  # evaluation is not training throughput
            if stop and done < total_steps:
                stopped_at = done
                break
    progress.close()
    manager.wait_until_finished()
    manager.close()
    if stopped_at is not None:
        writer.close()
        return {"stopped_at_step": stopped_at}

    # Test predictions with the best parameters.
    assert best_index is not None and best_params is not None
    results: dict[str, Any] = {
        "task": spec.name,
        "published": task_cfg.published,
        "init": config.init,
        "load_report": load_report,
        "main_split": main_eval,
        "epochs": epochs,
        "best": epochs[best_index],
        "test": {},
        "prediction_files": [],
    }
    best_on_mesh = jax.device_put(best_params, shardings.params)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        for name, split in test_sets.items():
            predictions = to_predictions(predict_split(best_on_mesh, split), spec)
            if data.glue_task is not None:
                path = workdir / "submission" / data.glue_task.submission[name]
                cells = glue.submission_rows(data.glue_task, predictions)
            else:
                path = workdir / "predictions" / f"{name}.tsv"
                cells = (
                    [f"{p:.6f}" for p in predictions]
                    if spec.kind == "regression"
                    else [spec.labels[int(p)] for p in predictions]
                )
            if split.labels is not None:
                results["test"][name] = evaluate_split(spec, split.labels, predictions)
            if is_main:
                write_predictions(path, split.ids, cells)
            results["prediction_files"].append(str(path))
    if is_main:
        writer.plot_curves(panels=(("loss", "train loss"), ("accuracy", "train accuracy"), ("score", "eval score")))
        write_text_atomically(results_file, json.dumps(results, indent=2))
        if not train_cfg.keep_checkpoint:  # finished: nothing resumes from it (best/ is the model)
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    writer.close()
    return results


def print_summary(results: dict[str, Any], workdir: str | Path) -> None:
    if "stopped_at_step" in results:
        train.print_stopped(results["stopped_at_step"], workdir)
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
