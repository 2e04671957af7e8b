"""Extractive question answering (SQuAD v1.1 and v2.0): the answer is a span of the context.

Reads SQuAD-layout files (`bertjax.data.squad`), cuts long contexts into overlapping windows, and
puts a span head on every token (Hugging Face's `BertForQuestionAnswering`): the loss is the mean
of the start and end cross-entropies over the window's context tokens and [CLS]
(`task.answer_positions`; "window": all its tokens). Padding takes no share of the softmax, so
the loss does not depend on how far a batch is padded. Each epoch the eval splits
are decoded into answers (n-best spans over all windows of a question) and scored with the
official scripts' exact match and F1 (`bertjax.tasks.squad_eval`); F1 picks the best epoch.
Predictions are written as the official predictions file (question id -> answer text), with the
n-best candidates and their probabilities beside it (and, for v2.0, each question's no-answer
odds).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tokenizers

from bertjax.config import ModelConfig, TaskConfig
from bertjax.data import squad
from bertjax.data.squad import Questions, Windows
from bertjax.errors import ConfigError
from bertjax.fileio import write_text_atomically
from bertjax.model.bert import BertForQuestionAnswering
from bertjax.tasks import squad_eval
from bertjax.tasks.base import Split, Task, TaskData, sample_rows


@dataclasses.dataclass
class Asked:
    """A split's questions and their windows."""

    questions: Questions
    windows: Windows

    @property
    def labels(self) -> dict[str, list[str]] | None:
        return self.questions.labels


def _subset(questions: Questions, count: int, seed: object) -> Questions:
    rows = sample_rows(len(questions), count, seed)
    return dataclasses.replace(questions, questions=[questions.questions[i] for i in rows])


class QuestionAnsweringTask(Task):
    """An answer span per question (see the module docstring)."""

    per_token = True

    def __init__(self, task: TaskConfig, seed: int = 0) -> None:
        if not task.train_file or not task.dev_file:
            raise ConfigError("config keys task.train_file and task.dev_file: SQuAD-layout JSON files")
        self.config = task
        read = lambda path: squad.read_file(path, task.version_2_with_negative)  # noqa: E731
        self.train = read(task.train_file)
        if self.train.labels is None:
            raise ConfigError(f"config key task.train_file: {task.train_file} has no answers")
        self.train = _subset(self.train, task.max_train_examples, [seed, 8])
        self.evals = {"dev": _subset(read(task.dev_file), task.max_eval_examples, 9)}
        if not self.evals["dev"].labelled:
            raise ConfigError(f"config key task.dev_file: {task.dev_file} has no answers to score")
        self.tests = {"test": read(task.test_file)} if task.test_file else {}
        self.name = "squad_v2" if task.version_2_with_negative else "squad"
        self.published = task.published

    def model(self, config: ModelConfig) -> nn.Module:
        return BertForQuestionAnswering(config)

    def load(self, tokenizer: tokenizers.Tokenizer, max_seq_length: int) -> TaskData:
        cfg = self.config

        def encode(name: str, questions: Questions) -> Split:
            windows = squad.encode(
                questions, tokenizer, max_seq_length, cfg.doc_stride, cfg.max_query_length, keep_offsets=name != "train"
            )
            features = {
                "input_ids": windows.input_ids,
                "token_type_ids": windows.token_type_ids,
                "attention_mask": windows.attention_mask,
                "start_positions": windows.start_positions,
                "end_positions": windows.end_positions,
                "context_start": windows.context_start,
                "context_end": windows.context_end,
            }
            extra = len(windows.input_ids) - len(questions)
            return Split(name, features, Asked(questions, windows), questions.source, extra)

        return TaskData(
            train=encode("train", self.train),
            evals={name: encode(name, q) for name, q in self.evals.items()},
            tests={name: encode(name, q) for name, q in self.tests.items()},
        )

    def describe(self, data: TaskData, max_seq_length: int) -> str:
        return (
            f"{self.name}: {len(data.train.examples.questions)} train questions in {len(data.train)} windows of "
            f"{max_seq_length} tokens (stride {self.config.doc_stride}); "
            + ", ".join(
                f"{name} {len(split.examples.questions)} questions in {len(split)} windows"
                for name, split in data.evals.items()
            )
        )

    def loss_sums(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        weights = batch["weights"]
        start, end = batch["start_positions"], batch["end_positions"]
        # Padding is no candidate: a batch padded further gives the same loss.
        candidates = batch["attention_mask"] > 0
        if self.config.answer_positions == "context":  # the context's tokens and [CLS] (config.TaskConfig)
            positions = jnp.arange(candidates.shape[1])
            context = (positions >= batch["context_start"][:, None]) & (positions <= batch["context_end"][:, None])
            candidates &= context | (positions == 0)
        outputs = jnp.where(candidates[..., None], outputs, -1e9)
        start_loss = optax.softmax_cross_entropy_with_integer_labels(outputs[..., 0], start)
        end_loss = optax.softmax_cross_entropy_with_integer_labels(outputs[..., 1], end)
        hits = (outputs[..., 0].argmax(-1) == start) & (outputs[..., 1].argmax(-1) == end)
        return ((start_loss + end_loss) / 2 * weights).sum(), {
            "correct": (hits * weights).sum(),
            "count": weights.sum(),
        }

    def summarise(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`accuracy`: the share of windows whose start and end tokens are both right."""
        return {"accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0)}

    def decode(self, split: Split, outputs: np.ndarray) -> squad.Decoded:
        cfg = self.config
        return squad.decode(
            split.examples.questions,
            split.examples.windows,
            outputs,
            cfg.n_best_size,
            cfg.max_answer_length,
            cfg.version_2_with_negative,
            cfg.null_score_diff_threshold,
        )

    def evaluate(self, split: Split, outputs: np.ndarray) -> dict[str, float]:
        decoded = self.decode(split, outputs)
        odds = decoded.null_odds if self.config.version_2_with_negative else None
        values = squad_eval.evaluate(split.examples.labels, decoded.answers, odds)
        return {"score": values["f1"], **values}

    def write_predictions(self, split: Split, outputs: np.ndarray, workdir: Path) -> Path:
        """predictions/<split>.json (id -> answer text), <split>_nbest.json and, for v2.0,
        <split>_null_odds.json."""
        decoded = self.decode(split, outputs)
        folder = workdir / "predictions"
        write_text_atomically(folder / f"{split.name}_nbest.json", json.dumps(decoded.nbest, indent=1))
        if self.config.version_2_with_negative:
            write_text_atomically(folder / f"{split.name}_null_odds.json", json.dumps(decoded.null_odds, indent=1))
        path = folder / f"{split.name}.json"
        write_text_atomically(path, json.dumps(decoded.answers, indent=1, ensure_ascii=False))
        return path
