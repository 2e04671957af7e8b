"""The GLUE benchmark: its nine tasks and the diagnostic set, where their data live, how they are
scored, and the leaderboard's submission files.

Data come from the standard GLUE directory of TSV files (`CoLA/train.tsv`, `MNLI/dev_matched.tsv`,
`diagnostic/diagnostic.tsv`, ... as `download_glue_data.py` lays them out, each task in its own
column layout) or from the TFDS `glue/*` builders (online, or prepared from the GLUE files in
TFDS's manual_dir). Scores follow the GLUE paper: a task with two metrics scores their mean,
MNLI-m and MNLI-mm count as one task, and the benchmark's score is the mean over the nine tasks
(the diagnostic AX is predicted, not scored).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bertjax.data.labelled import Examples, Layout, TaskSpec, read_file, read_tfds
from bertjax.errors import DataError

BINARY = ("0", "1")
NLI = ("entailment", "not_entailment")
MNLI_LABELS = ("contradiction", "entailment", "neutral")


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its spec, its folder and files, its TFDS builder, its submission files."""

    spec: TaskSpec
    directory: str  # folder in the GLUE data directory
    files: dict[str, str]  # split -> file in that folder
    tfds_name: str  # builder, e.g. "glue/cola"
    tfds_splits: dict[str, str]  # our split -> TFDS split
    tfds_features: dict[str, Layout]  # split kind ("labelled"/"test") -> TFDS feature names
    submission: dict[str, str]  # test split -> leaderboard file name
    # TFDS's integer labels as our label strings, in TFDS's order; () = the builder's own names.
    tfds_label_names: tuple[str, ...] = ()


def _task(
    name: str,
    kind: str,
    labels: tuple[str, ...],
    metrics: tuple[str, ...],
    directory: str,
    labelled: Layout,
    test: Layout,
    tfds_config: str,
    tfds_labelled: Layout,
    tfds_test: Layout,
    submission: str,
    skip_ragged_rows: bool = False,
) -> GlueTask:
    spec = TaskSpec(
        name=name,
        kind=kind,
        labels=labels,
        metrics=metrics,
        layouts={"train": labelled, "dev": labelled, "test": test},
        skip_ragged_rows=skip_ragged_rows,
    )
    return GlueTask(
        spec=spec,
        directory=directory,
        files={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        tfds_name=f"glue/{tfds_config}",
        tfds_splits={"train": "train", "dev": "validation", "test": "test"},
        tfds_features={"train": tfds_labelled, "dev": tfds_labelled, "test": tfds_test},
        submission={"test": submission},
        tfds_label_names=labels if labels == BINARY else (),
    )


def _pair(a: str, b: str, label: str = "label", index: str = "idx") -> Layout:
    return Layout(text_a=a, text_b=b, label=label, index=index)


def _mnli() -> GlueTask:
    labelled = Layout(text_a="sentence1", text_b="sentence2", label="gold_label")
    test = Layout(text_a="sentence1", text_b="sentence2", index="index")
    splits = ("dev_matched", "dev_mismatched")
    tests = ("test_matched", "test_mismatched", "ax")
    spec = TaskSpec(
        name="mnli",
        kind="classification",
        labels=MNLI_LABELS,
        metrics=("accuracy",),
        layouts={"train": labelled, **dict.fromkeys(splits, labelled), **dict.fromkeys(tests, test)},
        eval_splits=splits,
        test_splits=tests,
    )
    tfds_labelled = _pair("premise", "hypothesis")
    tfds_test = Layout(text_a="premise", text_b="hypothesis", index="idx")
    return GlueTask(
        spec=spec,
        directory="MNLI",
        files={
            "train": "train.tsv",
            "dev_matched": "dev_matched.tsv",
            "dev_mismatched": "dev_mismatched.tsv",
            "test_matched": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
            "ax": "../diagnostic/diagnostic.tsv",
        },
        tfds_name="glue/mnli",
        tfds_splits={
            "train": "train",
            "dev_matched": "validation_matched",
            "dev_mismatched": "validation_mismatched",
            "test_matched": "test_matched",
            "test_mismatched": "test_mismatched",
            "ax": "glue/ax:test",
        },
        tfds_features={
            "train": tfds_labelled,
            **dict.fromkeys(splits, tfds_labelled),
            **dict.fromkeys(tests, tfds_test),
        },
        submission={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"},
        tfds_label_names=("entailment", "neutral", "contradiction"),
    )


TASKS: dict[str, GlueTask] = {
    "cola": _task(
        "cola",
        "classification",
        BINARY,
        ("matthews_corrcoef",),
        "CoLA",
        # No header: source, label, original label, sentence.
        Layout(text_a="3", label="1", header=False),
        Layout(text_a="sentence", index="index"),
        "cola",
        Layout(text_a="sentence", label="label", index="idx"),
        Layout(text_a="sentence", index="idx"),
        "CoLA.tsv",
    ),
    "sst2": _task(
        "sst2",
        "classification",
        BINARY,
        ("accuracy",),
        "SST-2",
        Layout(text_a="sentence", label="label"),
        Layout(text_a="sentence", index="index"),
        "sst2",
        Layout(text_a="sentence", label="label", index="idx"),
        Layout(text_a="sentence", index="idx"),
        "SST-2.tsv",
    ),
    "mrpc": _task(
        "mrpc",
        "classification",
        BINARY,
        ("f1", "accuracy"),
        "MRPC",
        Layout(text_a="#1 String", text_b="#2 String", label="Quality"),
        Layout(text_a="#1 String", text_b="#2 String", index="index"),
        "mrpc",
        _pair("sentence1", "sentence2"),
        Layout(text_a="sentence1", text_b="sentence2", index="idx"),
        "MRPC.tsv",
    ),
    "stsb": _task(
        "stsb",
        "regression",
        (),
        ("pearson", "spearman"),
        "STS-B",
        Layout(text_a="sentence1", text_b="sentence2", label="score"),
        Layout(text_a="sentence1", text_b="sentence2", index="index"),
        "stsb",
        _pair("sentence1", "sentence2"),
        Layout(text_a="sentence1", text_b="sentence2", index="idx"),
        "STS-B.tsv",
    ),
    "qqp": _task(
        "qqp",
        "classification",
        BINARY,
        ("f1", "accuracy"),
        "QQP",
        Layout(text_a="question1", text_b="question2", label="is_duplicate"),
        Layout(text_a="question1", text_b="question2", index="id"),
        "qqp",
        _pair("question1", "question2"),
        Layout(text_a="question1", text_b="question2", index="idx"),
        "QQP.tsv",
        skip_ragged_rows=True,
    ),
    "mnli": _mnli(),
    "qnli": _task(
        "qnli",
        "classification",
        NLI,
        ("accuracy",),
        "QNLI",
        Layout(text_a="question", text_b="sentence", label="label"),
        Layout(text_a="question", text_b="sentence", index="index"),
        "qnli",
        _pair("question", "sentence"),
        Layout(text_a="question", text_b="sentence", index="idx"),
        "QNLI.tsv",
    ),
    "rte": _task(
        "rte",
        "classification",
        NLI,
        ("accuracy",),
        "RTE",
        Layout(text_a="sentence1", text_b="sentence2", label="label"),
        Layout(text_a="sentence1", text_b="sentence2", index="index"),
        "rte",
        _pair("sentence1", "sentence2"),
        Layout(text_a="sentence1", text_b="sentence2", index="idx"),
        "RTE.tsv",
    ),
    "wnli": _task(
        "wnli",
        "classification",
        BINARY,
        ("accuracy",),
        "WNLI",
        Layout(text_a="sentence1", text_b="sentence2", label="label"),
        Layout(text_a="sentence1", text_b="sentence2", index="index"),
        "wnli",
        _pair("sentence1", "sentence2"),
        Layout(text_a="sentence1", text_b="sentence2", index="idx"),
        "WNLI.tsv",
    ),
}
# The GLUE leaderboard's column names, in its order.
DISPLAY_NAMES = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise DataError(f"unknown GLUE task {name!r} (the tasks are {', '.join(TASKS)})")
    return TASKS[key]


def read_split(task: GlueTask, split: str, data_dir: str = "", tfds_data_dir: str = "") -> Examples:
    """A split from the GLUE TSV directory `data_dir`, or (when it is empty) from TFDS."""
    spec = task.spec
    if data_dir:
        path = Path(data_dir) / task.directory / task.files[split]
        if split == "ax" and not path.is_file() and (Path(data_dir) / "AX" / "test.tsv").is_file():
            path = Path(data_dir) / "AX" / "test.tsv"  # another common layout of the diagnostic set
        return read_file(path.resolve(), spec, spec.layouts[split])
    name, tfds_split = task.tfds_name, task.tfds_splits[split]
    if ":" in tfds_split:  # the diagnostic set is its own builder
        name, tfds_split = tfds_split.split(":")
    layout = task.tfds_features[split]
    return read_tfds(name, tfds_split, spec, layout, tfds_data_dir, label_names=task.tfds_label_names)


def submission_rows(task: GlueTask, predictions: np.ndarray) -> list[str]:
    """Prediction cells as the leaderboard wants them: label strings, 0/1, or a score in [0, 5]."""
    if task.spec.kind == "regression":
        return [f"{min(max(float(p), 0.0), 5.0):.3f}" for p in predictions]
    return [task.spec.labels[int(p)] for p in predictions]


def glue_score(task_scores: dict[str, float]) -> float:
    """The benchmark's macro-average over the tasks given (each a task score in [0, 1] or [-1, 1])."""
    return float(np.mean(list(task_scores.values())))
