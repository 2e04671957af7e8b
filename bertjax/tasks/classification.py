"""Sequence-level tasks: classification and regression of a text or a text pair.

Both read their splits the same way, from GLUE (the TSV directory or TFDS) or from any labelled
files or TFDS builder described by their columns (`task.name="custom"`), and put one head on the
[CLS] token's pooled output (Hugging Face's `BertForSequenceClassification`). They differ in the
loss (cross-entropy against squared error), the predictions (a label against a score) and how a
prediction is written.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tokenizers

from bertjax.config import ModelConfig, TaskConfig
from bertjax.data import labelled
from bertjax.data.labelled import Examples, Layout, TaskSpec
from bertjax.errors import ConfigError, DataError
from bertjax.fileio import write_text_atomically
from bertjax.model.bert import BertForSequenceClassification
from bertjax.tasks import glue, metrics
from bertjax.tasks.base import Split, Task, TaskData


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
    if not task.train_file:
        raise ConfigError("config key task.labels: a TFDS custom task must list its labels")
    found = labelled.label_strings(task.train_file, spec.layouts["train"], task.file_format)
    return dataclasses.replace(spec, labels=tuple(sorted(found)))


def _read_glue(task: TaskConfig) -> tuple[TaskSpec, Examples, dict[str, Examples], dict[str, Examples], glue.GlueTask]:
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
    return spec, train, evals, tests, glue_task


def _read_custom(task: TaskConfig, seed: int) -> tuple[TaskSpec, Examples, dict[str, Examples], dict[str, Examples]]:
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
    return spec, train, {"dev": dev}, {"test": test} if test is not None else {}


class SequenceTask(Task):
    """A text (or text pair) in, one prediction out: what classification and regression share."""

    def __init__(
        self,
        spec: TaskSpec,
        train: Examples,
        evals: dict[str, Examples],
        tests: dict[str, Examples],
        glue_task: glue.GlueTask | None = None,
        published: str = "",
    ) -> None:
        self.spec, self.glue_task, self.published = spec, glue_task, published
        self.name, self.labels = spec.name, spec.labels
        self._splits = (train, evals, tests)

    def model(self, config: ModelConfig) -> nn.Module:
        return BertForSequenceClassification(config, self.spec.num_labels)

    def load(self, tokenizer: tokenizers.Tokenizer, max_seq_length: int) -> TaskData:
        def encode(name: str, examples: Examples) -> Split:
            encoded = labelled.encode(examples, tokenizer, max_seq_length)
            targets = examples.labels if examples.labels is not None else np.zeros(len(examples))
            features = {
                "input_ids": encoded.input_ids,
                "token_type_ids": encoded.token_type_ids,
                "attention_mask": encoded.attention_mask,
                "labels": np.asarray(targets, np.float32),
            }
            return Split(name, features, examples, examples.source, encoded.truncated)

        train, evals, tests = self._splits
        return TaskData(
            train=encode("train", train),
            evals={name: encode(name, split) for name, split in evals.items()},
            tests={name: encode(name, split) for name, split in tests.items()},
        )

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def cells(self, predictions: np.ndarray) -> list[str]:
        """Prediction cells of a predictions file."""
        raise NotImplementedError

    def evaluate(self, split: Split, outputs: np.ndarray) -> dict[str, float]:
        values = metrics.compute(self.spec.metrics, split.examples.labels, self.predictions(outputs))
        values["score"] = self.spec.score(values)
        return values

    def write_predictions(self, split: Split, outputs: np.ndarray, workdir: Path) -> Path:
        """GLUE's leaderboard file in `submission/`, or `predictions/<split>.tsv`: a header
        `index<TAB>prediction`, then one row per example."""
        predictions = self.predictions(outputs)
        if self.glue_task is not None:
            path = workdir / "submission" / self.glue_task.submission[split.name]
            cells = glue.submission_rows(self.glue_task, predictions)
        else:
            path = workdir / "predictions" / f"{split.name}.tsv"
            cells = self.cells(predictions)
        rows = [f"{i}\t{c}" for i, c in zip(split.examples.ids, cells)]
        write_text_atomically(path, "index\tprediction\n" + "\n".join(rows) + "\n")
        return path


class ClassificationTask(SequenceTask):
    """One of `labels` per text: cross-entropy, argmax predictions, accuracy logged in training."""

    def loss_sums(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        weights = batch["weights"]
        labels = batch["labels"].astype(jnp.int32)
        per_row = optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
        hits = (outputs.argmax(-1) == labels).astype(jnp.float32)
        return (per_row * weights).sum(), {"correct": (hits * weights).sum(), "count": weights.sum()}

    def summarise(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {"accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0)}

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.argmax(-1)

    def cells(self, predictions: np.ndarray) -> list[str]:
        return [self.labels[int(p)] for p in predictions]


class RegressionTask(SequenceTask):
    """A score per text: squared error against the label, the head's one output as the prediction."""

    def loss_sums(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        weights = batch["weights"]
        return (jnp.square(outputs[:, 0] - batch["labels"]) * weights).sum(), {"count": weights.sum()}

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[:, 0]

    def cells(self, predictions: np.ndarray) -> list[str]:
        return [f"{p:.6f}" for p in predictions]


def from_config(task: TaskConfig, seed: int) -> SequenceTask:
    """The GLUE task named by `task.name`, or the custom one described by `task`'s columns, with its
    splits read (`seed` draws the dev examples held out of train by `task.dev_fraction`)."""
    glue_task = None
    if task.name != "custom":
        spec, train, evals, tests, glue_task = _read_glue(task)
    else:
        spec, train, evals, tests = _read_custom(task, seed)
    cls = RegressionTask if spec.kind == "regression" else ClassificationTask
    return cls(spec, train, evals, tests, glue_task, task.published)
