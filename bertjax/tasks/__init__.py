"""Fine-tuning tasks: what a task is (`base`), GLUE and any labelled text set (`classification`,
`glue`), token tagging (`tagging`), extractive question answering (`qa`), and their metrics.
`from_config` makes the task a config names."""

from __future__ import annotations

from bertjax.config import TaskConfig
from bertjax.tasks import classification, tagging
from bertjax.tasks.base import Task


def from_config(task: TaskConfig, seed: int) -> Task:
    """The task that `task` describes, its splits read (`seed`: the dev share held out of train)."""
    if task.name == "ner":
        return tagging.TaggingTask(task, seed)
    if task.name == "squad":
        from bertjax.tasks import qa

        return qa.QuestionAnsweringTask(task, seed)
    return classification.from_config(task, seed)
