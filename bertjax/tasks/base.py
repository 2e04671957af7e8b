"""What a fine-tuning task is: the one object the fine-tuning loop is given.

A task owns everything that differs between tasks: its model (the encoder with its head), how its
examples become model inputs, its loss, its metrics, and how it writes its predictions. The loop
(`bertjax.training.finetuning`) owns what is the same for all: batches, the update, evaluation
each epoch, the best epoch kept, checkpoints and resume, several hosts. Adding a task means
writing a subclass of `Task` and naming it in `bertjax.tasks.from_config`; the loop does not change.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from bertjax.config import ModelConfig

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


@dataclasses.dataclass
class Split:
    """One split encoded for the model.

    `features` are row-aligned arrays: the model inputs (`input_ids`, `token_type_ids`,
    `attention_mask`, [rows, length]) and the task's targets. Arrays as long as the inputs along
    axis 1 are cut with them when a batch is cut to its longest row. `examples` is the task's own
    record of the split (texts, labels, ids) for scoring and writing predictions.
    """

    name: str
    features: dict[str, np.ndarray]
    examples: Any
    source: str
    truncated: int = 0  # examples longer than the model inputs

    def __len__(self) -> int:
        return len(self.features["input_ids"])

    @property
    def labelled(self) -> bool:
        return self.examples.labels is not None


@dataclasses.dataclass
class TaskData:
    """A task's splits: train, the eval splits (the first selects the best epoch), the test splits."""

    train: Split
    evals: dict[str, Split]
    tests: dict[str, Split]

    @property
    def main_split(self) -> str:
        """The eval split whose score picks the best epoch: the first."""
        return next(iter(self.evals))


def sample_rows(total: int, count: int, seed: Any) -> np.ndarray:
    """`count` of `total` rows drawn with `seed`, in their original order (all when count is 0)."""
    if not 0 < count < total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


class Task(abc.ABC):
    """A fine-tuning task (see the module docstring)."""

    name: str
    labels: tuple[str, ...] = ()  # label strings in id order, saved with the model (HF id2label)
    published: str = ""  # a published result, printed beside ours
    input_keys: tuple[str, ...] = INPUT_KEYS
    per_token: bool = False  # outputs are per token ([rows, length, ...]), not per row
    # Whether examples can share rows (task.packing): every feature is per token; and the value
    # of a feature where no token is (an ignored label), if not 0.
    packable: bool = False
    feature_padding: dict[str, int] = {}  # noqa: RUF012

    @abc.abstractmethod
    def model(self, config: ModelConfig) -> nn.Module:
        """The encoder with this task's head; called with the `input_keys` arrays."""

    @abc.abstractmethod
    def load(self, tokenizer: tokenizers.Tokenizer, max_seq_length: int) -> TaskData:
        """Every split, read and encoded."""

    @abc.abstractmethod
    def loss_sums(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(summed loss, summed metrics) of a batch's model outputs; rows of weight 0 count for nothing."""

    def denominator(self, batch: dict[str, jax.Array]) -> jax.Array:
        """What the summed loss is divided by: the batch's real rows (weight 1)."""
        return jnp.maximum(batch["weights"].sum(), 1.0)

    def summarise(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Logged train metrics from the summed ones (the update adds the optimised `loss`)."""
        return {}

    @abc.abstractmethod
    def evaluate(self, split: Split, outputs: np.ndarray) -> dict[str, float]:
        """The split's metrics from the model's outputs for all its rows, with the task's single `score`."""

    @abc.abstractmethod
    def write_predictions(self, split: Split, outputs: np.ndarray, workdir: Path) -> Path:
        """Writes the split's predictions under `workdir`; returns the file's path."""

    def describe(self, data: TaskData, max_seq_length: int) -> str:
        """One line on the data, printed at the start of a run."""
        return (
            f"{self.name}: {len(data.train)} train examples ({data.train.truncated} truncated to {max_seq_length} "
            f"tokens); " + ", ".join(f"{name} {len(split)}" for name, split in data.evals.items())
        )

    def loss(
        self,
        params: Any,
        batch: dict[str, jax.Array],
        rng: jax.Array | None,
        denominator: jax.Array,
        *,
        model: nn.Module,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss of a (micro)batch, its summed loss divided by the whole batch's `denominator`, and
        the summed metrics: what the shared update optimises (`training.finetuning.objective`)."""
        deterministic = rng is None
        outputs = model.apply(
            {"params": params},
            *(batch[k] for k in self.input_keys),
            deterministic=deterministic,
            rngs=None if deterministic else {"dropout": rng},
        )
        total, sums = self.loss_sums(outputs, batch)
        return total / denominator, sums

    def predict(self, params: Any, batch: dict[str, jax.Array], *, model: nn.Module) -> jax.Array:
        """The model's outputs for a batch (no dropout)."""
        return model.apply({"params": params}, *(batch[k] for k in self.input_keys))
