"""Fine-tuning tasks: what a task is (`base`), GLUE and any labelled text set (`classification`,
`glue`), and their metrics. `from_config` makes the task a config names."""

from __future__ import annotations

from bertjax.config import TaskConfig
from bertjax.tasks import classification
from bertjax.tasks.base import Task


def from_config(task: TaskConfig, seed: int) -> Task:
    """The task that `task` describes, its splits read (`seed`: the dev share held out of train)."""
    return classification.from_config(task, seed)
