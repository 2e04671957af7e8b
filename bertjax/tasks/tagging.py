"""Token classification (named entities): a tag per word, scored by entities.

Reads CoNLL or JSONL files (`bertjax.data.tagging`), puts a linear head on every token
(Hugging Face's `BertForTokenClassification`), trains with cross-entropy on each word's first
sub-token, and scores entity-level precision, recall and F1 with conlleval's semantics
(`bertjax.tasks.entities`); the score that picks the best epoch is the micro F1. Predictions are
written in conlleval's input layout: the file with a predicted-tag column added.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tokenizers

from bertjax.config import ModelConfig, TaskConfig
from bertjax.data import tagging
from bertjax.data.tagging import IGNORE, EncodedTags, Sentences
from bertjax.errors import ConfigError
from bertjax.model.bert import BertForTokenClassification
from bertjax.tasks import entities
from bertjax.tasks.base import Split, Task, TaskData, sample_rows


@dataclasses.dataclass
class Tagged:
    """A split's sentences and where their words went in the encoded windows."""

    sentences: Sentences
    encoded: EncodedTags

    @property
    def labels(self) -> list[list[str]] | None:
        return self.sentences.tags


class TaggingTask(Task):
    """A tag per word (see the module docstring)."""

    per_token = True
    packable = True
    feature_padding = {"labels": IGNORE}  # noqa: RUF012

    def __init__(self, task: TaskConfig, seed: int) -> None:
        if not task.train_file:
            raise ConfigError("config key task.train_file: a tagging task reads CoNLL or JSONL files")
        read = lambda path: tagging.read_file(path, task.file_format)  # noqa: E731
        self.train = read(task.train_file)
        self.evals = {"dev": read(task.dev_file)} if task.dev_file else {}
        self.tests = {"test": read(task.test_file)} if task.test_file else {}
        if self.train.tags is None:
            raise ConfigError(f"config key task.train_file: {task.train_file} has no tags")
        if not self.evals:
            if task.dev_fraction <= 0:
                raise ConfigError("config: the task has no dev split: set task.dev_file or task.dev_fraction")
            self.train, self.evals["dev"] = split_off(self.train, task.dev_fraction, seed)
        if self.evals["dev"].tags is None:
            raise ConfigError(f"config key task.dev_file: {task.dev_file} has no tags to score")
        # The tags of all of train, before any subset is drawn.
        self.labels = tuple(task.labels) or tuple(sorted({t for tags in self.train.tags for t in tags}))
        self.train = subset(self.train, task.max_train_examples, [seed, 8])
        self.evals = {name: subset(split, task.max_eval_examples, 9) for name, split in self.evals.items()}
        for split in [self.train, *self.evals.values(), *self.tests.values()]:
            tagging.check_tags(split, task.tag_scheme, self.labels)
        self.name = Path(task.train_file).parent.name or "ner"
        self.published = task.published

    def model(self, config: ModelConfig) -> nn.Module:
        return BertForTokenClassification(config, len(self.labels))

    def load(self, tokenizer: tokenizers.Tokenizer, max_seq_length: int) -> TaskData:
        def encode(name: str, sentences: Sentences) -> Split:
            encoded = tagging.encode(sentences, tokenizer, max_seq_length, self.labels)
            features = {
                "input_ids": encoded.input_ids,
                "token_type_ids": encoded.token_type_ids,
                "attention_mask": encoded.attention_mask,
                "labels": encoded.labels,
            }
            return Split(
                name, features, Tagged(sentences, encoded), sentences.source, encoded.windows_of_long_sentences
            )

        return TaskData(
            train=encode("train", self.train),
            evals={name: encode(name, s) for name, s in self.evals.items()},
            tests={name: encode(name, s) for name, s in self.tests.items()},
        )

    def describe(self, data: TaskData, max_seq_length: int) -> str:
        sentences = data.train.examples.sentences
        return (
            f"{self.name}: {len(sentences)} train sentences in {len(data.train)} windows of {max_seq_length} "
            f"tokens; {len(self.labels)} tags; "
            + ", ".join(f"{name} {len(split.examples.sentences)} sentences" for name, split in data.evals.items())
        )

    def _mask(self, batch: dict[str, jax.Array]) -> jax.Array:
        return (batch["labels"] != IGNORE).astype(jnp.float32) * batch["weights"][:, None]

    def loss_sums(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        mask = self._mask(batch)
        labels = jnp.maximum(batch["labels"], 0)
        per_token = optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
        hits = (outputs.argmax(-1) == labels).astype(jnp.float32)
        return (per_token * mask).sum(), {"correct": (hits * mask).sum(), "count": mask.sum()}

    def denominator(self, batch: dict[str, jax.Array]) -> jax.Array:
        """The batch's labelled tokens (each word's first sub-token), as Hugging Face's mean loss."""
        return jnp.maximum(self._mask(batch).sum(), 1.0)

    def summarise(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {"accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0)}

    def predicted(self, split: Split, outputs: np.ndarray) -> list[list[str]]:
        return tagging.predicted_tags(split.examples.encoded, outputs, self.labels)

    def evaluate(self, split: Split, outputs: np.ndarray) -> dict[str, float]:
        values = entities.scores(split.examples.sentences.tags, self.predicted(split, outputs))
        return {"score": values["f1"], **values}

    def write_predictions(self, split: Split, outputs: np.ndarray, workdir: Path) -> Path:
        path = workdir / "predictions" / f"{split.name}.txt"
        return tagging.write_predictions(split.examples.sentences, self.predicted(split, outputs), path)


def subset(sentences: Sentences, count: int, seed: object) -> Sentences:
    """`count` sentences drawn with `seed` (all when 0), in file order."""
    return _rows(sentences, sample_rows(len(sentences), count, seed))


def _rows(sentences: Sentences, rows: np.ndarray) -> Sentences:
    tags = [sentences.tags[i] for i in rows] if sentences.tags is not None else None
    words = [sentences.words[i] for i in rows]
    return Sentences(words, tags, sentences.source, sentences.file_format, [sentences.lines[i] for i in rows])


def split_off(sentences: Sentences, fraction: float, seed: int) -> tuple[Sentences, Sentences]:
    """(train, dev): `fraction` of the sentences, drawn with `seed`, held out as dev."""
    order = np.random.default_rng([seed, 7]).permutation(len(sentences))
    cut = max(1, round(len(sentences) * fraction))
    return _rows(sentences, np.sort(order[cut:])), _rows(sentences, np.sort(order[:cut]))
