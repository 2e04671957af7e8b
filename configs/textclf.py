"""Fine-tune BERT on any labelled text set: single texts or pairs, classification or regression.

    python -m bertjax.finetune --config=configs/textclf.py --config.init=CKPT --workdir=runs/mytask \\
        --config.task.train_file=train.tsv --config.task.test_file=test.tsv --config.task.dev_fraction=0.1 \\
        --config.task.text_a=text --config.task.label=label

Files are TSV, CSV or JSONL (by suffix, or task.file_format); columns are named by the header (or
0-based indices with task.header=False). The labels are those of the training file unless
task.labels lists them. A TFDS builder works too: task.tfds_name, task.tfds_*_split.
"""

from collections.abc import Callable

import ml_collections

from bertjax.config import parse_config_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("size", "runlocal"))
    passed = ",".join(f"{k}={v}" if v != "true" else k for k, v in args.items())
    config = sibling_config(__file__, "glue.py", passed)  # the same model, optimizer and loop settings as GLUE
    task = config.task
    task.name = "custom"
    task.kind = "classification"  # or "regression" (one score per example)
    task.labels = ""  # comma-separated label strings in id order; empty = the sorted labels of train
    task.metrics = "accuracy,macro_f1"  # bertjax.metrics names; their mean picks the best epoch
    task.train_file = ""
    task.dev_file = ""  # empty: hold out dev_fraction of train
    task.test_file = ""  # predicted (and scored, if labelled) with the best checkpoint
    task.file_format = ""  # tsv, csv, jsonl; empty = by suffix
    task.header = True
    task.skip_rows = 0  # lines after the header to skip
    task.text_a = "text"
    task.text_b = ""  # a second text column for pairs
    task.label = "label"
    task.index = ""  # an id column for the prediction file; empty = row number
    task.dev_fraction = 0.1
    task.tfds_name = ""  # instead of files: a TFDS builder
    task.tfds_train_split = "train"
    task.tfds_dev_split = "validation"
    task.tfds_test_split = ""
    return config


def sweep(add: Callable[..., None]) -> None:
    """A small grid over the learning rate and epochs, two seeds."""
    for learning_rate in (5e-5, 3e-5):
        for epochs in (2, 3):
            for seed in (0, 1):
                add(**{"optim.learning_rate": learning_rate, "train.num_epochs": epochs, "train.seed": seed})
