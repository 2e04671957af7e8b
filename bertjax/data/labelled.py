"""Labelled text sets for fine-tuning: tasks, readers (TSV/CSV/JSONL/TFDS) and encoding.

A `TaskSpec` says what a task is: single sentences or pairs, classification (its label strings,
in id order) or regression, its metrics, and how each split is laid out (`Layout`: header or
not, which column holds what). GLUE's nine tasks are `TaskSpec`s too (`bertjax.glue`); any
other labelled set is described in the config (`spec_from_config`).

Readers return `Examples` (texts, labels, ids) and check every row: a row with the wrong number
of columns, an unknown label or an unparsable score is a `DataError` naming the file and line;
an empty split is an error too. `encode` tokenizes with the BERT template
(`[CLS] a [SEP] b [SEP]`), truncating the longer text first, padding to `max_seq_length`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from bertjax import fileio
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.errors import DataError

csv.field_size_limit(sys.maxsize)  # some GLUE/QQP fields are long


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a split's fields are: column names (with a header) or 0-based indices (without)."""

    text_a: str
    text_b: str = ""  # "" = single-sentence task
    label: str = ""  # "" = unlabelled (a test split)
    index: str = ""  # an id column for predictions; "" = the row number
    header: bool = True
    skip_rows: int = 0  # lines to skip after the header (e.g. Orange's type rows)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A fine-tuning task."""

    name: str
    kind: str  # "classification" or "regression"
    labels: tuple[str, ...]  # classification label strings in id order; () for regression
    metrics: tuple[str, ...]  # names in bertjax.metrics.METRICS
    layouts: dict[str, Layout]  # split name -> layout
    eval_splits: tuple[str, ...] = ("dev",)  # the first one selects the best epoch
    test_splits: tuple[str, ...] = ("test",)
    skip_ragged_rows: bool = False  # QQP's train file has a few malformed rows: skipped, counted

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return any(layout.text_b for layout in self.layouts.values())

    def score(self, metrics: dict[str, float]) -> float:
        """The task's single score: the mean of its metrics (GLUE's rule for two-metric tasks)."""
        return float(np.mean([metrics[m] for m in self.metrics]))


@dataclasses.dataclass
class Examples:
    """One split: texts, labels (ids, scores, or None for unlabelled) and example ids."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None
    ids: list[str]
    source: str
    skipped_rows: int = 0

    def __len__(self) -> int:
        return len(self.text_a)


def _cell(row: list[str], key: str, columns: dict[str, int], where: str) -> str:
    return row[columns[key]] if key in columns else row[int(key)]


def _parse_label(value: str, spec: TaskSpec, where: str, raw: bool = False) -> float | int | str:
    if raw:
        return value.strip()
    if spec.kind == "regression":
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{where}: score {value!r} is not a number") from None
    value = value.strip()
    if value not in spec.labels:
        raise DataError(f"{where}: unknown label {value!r} (the task's labels are {', '.join(spec.labels)})")
    return spec.labels.index(value)


def _rows_of_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {e.start})") from None


def rows_of_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {number}: not JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path} line {number}: expected a JSON object")
                yield number, record
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {e.start})") from None


def read_file(
    path: str | Path, spec: TaskSpec, layout: Layout, file_format: str = "", raw_labels: bool = False
) -> Examples:
    """A split from a TSV, CSV or JSONL file (format from the suffix unless given).

    With `raw_labels` the labels stay strings (to discover a task's classes).
    """
    path = Path(path)
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"data file {path} {problem}")
    file_format = file_format or {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix, "tsv")
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[float | int] = []
    ids: list[str] = []
    skipped = 0
    if file_format == "jsonl":
        for number, record in rows_of_jsonl(path):
            where = f"{path} line {number}"
            for key in filter(None, (layout.text_a, layout.text_b, layout.label)):
                if key not in record:
                    raise DataError(f"{where}: no field {key!r}")
            text_a.append(str(record[layout.text_a]))
            if layout.text_b:
                text_b.append(str(record[layout.text_b]))
            if layout.label:
                labels.append(_parse_label(str(record[layout.label]), spec, where, raw_labels))
            ids.append(str(record[layout.index]) if layout.index in record else str(len(ids)))
    else:
        rows = _rows_of_delimited(path, "," if file_format == "csv" else "\t")
        columns: dict[str, int] = {}
        width = None
        if layout.header:
            first = next(rows, None)
            if first is None:
                raise DataError(f"{path} is empty")
            columns = {name.strip(): i for i, name in enumerate(first[1])}
            width = len(first[1])
            for key in filter(None, (layout.text_a, layout.text_b, layout.label, layout.index)):
                if key not in columns and not key.isdigit():
                    raise DataError(f"{path} line 1: no column {key!r} in the header ({', '.join(columns)})")
            for _ in range(layout.skip_rows):
                next(rows, None)
        for number, row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            width = width if width is not None else len(row)
            if len(row) != width:
                if spec.skip_ragged_rows:
                    skipped += 1
                    continue
                raise DataError(f"{path} line {number}: expected {width} columns, found {len(row)}")
            where = f"{path} line {number}"
            try:
                text_a.append(_cell(row, layout.text_a, columns, where))
                if layout.text_b:
                    text_b.append(_cell(row, layout.text_b, columns, where))
                if layout.label:
                    labels.append(_parse_label(_cell(row, layout.label, columns, where), spec, where, raw_labels))
            except IndexError:
                raise DataError(f"{where}: too few columns ({len(row)})") from None
            ids.append(_cell(row, layout.index, columns, where) if layout.index else str(len(ids)))
    if not text_a:
        raise DataError(f"{path} has no examples")
    label_array = None
    if layout.label:
        dtype = object if raw_labels else np.float32 if spec.kind == "regression" else np.int32
        label_array = np.asarray(labels, dtype)
    return Examples(text_a, text_b if layout.text_b else None, label_array, ids, str(path), skipped)


def label_strings(path: str | Path, layout: Layout, file_format: str = "") -> set[str]:
    """The distinct label strings of a file's label column (to name a task's classes)."""
    examples = read_file(path, TaskSpec("labels", "classification", (), (), {}), layout, file_format, raw_labels=True)
    return set(examples.labels.tolist())


def _text_feature(value: Any) -> str:
    """A TFDS text feature as a str (TFDS gives bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(
    name: str, split: str, spec: TaskSpec, layout: Layout, data_dir: str = "", label_names: tuple[str, ...] = ()
) -> Examples:
    """A split of a TFDS builder (e.g. glue/rte). `layout` names its features.

    Integer class labels are mapped through the builder's label names to `spec.labels`; a label
    of -1 (TFDS's "no label", as in GLUE test splits) makes the split unlabelled.
    """
    import tensorflow_datasets as tfds

    where = f"TFDS dataset {name} split {split}"
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
        source = builder.as_data_source(split=split)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{where} cannot be read: {reason}") from None
    if len(source) == 0:
        raise DataError(f"{where} is empty")
    label_feature = builder.info.features[layout.label] if layout.label else None
    names = label_names or tuple(getattr(label_feature, "names", ()) or ())
    text_a, text_b, labels, ids = [], [], [], []
    for i in range(len(source)):
        record = source[i]
        for key in filter(None, (layout.text_a, layout.text_b, layout.label)):
            if key not in record:
                raise DataError(f"{where} has no feature {key!r} (it has {', '.join(sorted(record))})")
        text_a.append(_text_feature(record[layout.text_a]))
        if layout.text_b:
            text_b.append(_text_feature(record[layout.text_b]))
        if layout.label:
            value = record[layout.label]
            if spec.kind == "regression":
                labels.append(float(value))
            elif int(value) >= 0:
                label = names[int(value)] if names else str(int(value))
                labels.append(_parse_label(label, spec, f"{where} record {i}"))
            else:
                labels.append(-1)
        ids.append(str(record[layout.index]) if layout.index and layout.index in record else str(i))
    if layout.index and all(i.lstrip("-").isdigit() for i in ids):
        # TFDS shuffles records when it prepares a split: put them back in their original order.
        order = sorted(range(len(ids)), key=lambda i: int(ids[i]))
        text_a, ids = [text_a[i] for i in order], [ids[i] for i in order]
        text_b = [text_b[i] for i in order] if text_b else text_b
        labels = [labels[i] for i in order] if labels else labels
    unlabelled = not layout.label or (spec.kind != "regression" and all(v == -1 for v in labels))
    if not unlabelled and spec.kind != "regression" and any(v == -1 for v in labels):
        raise DataError(f"{where}: some records have no label")
    label_array = None if unlabelled else np.asarray(labels, np.float32 if spec.kind == "regression" else np.int32)
    return Examples(text_a, text_b if layout.text_b else None, label_array, ids, where)


def split_off(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """(rest, held_out): a keyed random `fraction` of the examples held out (e.g. as dev)."""
    order = np.random.default_rng([seed, 5]).permutation(len(examples))
    count = max(1, round(len(examples) * fraction))
    if count >= len(examples):
        raise DataError(f"{examples.source}: too few examples ({len(examples)}) to hold out {fraction:.0%}")

    def take(rows: np.ndarray, suffix: str) -> Examples:
        rows = np.sort(rows)
        return Examples(
            [examples.text_a[i] for i in rows],
            [examples.text_b[i] for i in rows] if examples.text_b is not None else None,
            examples.labels[rows] if examples.labels is not None else None,
            [examples.ids[i] for i in rows],
            f"{examples.source} ({suffix})",
        )

    return take(order[count:], "rest"), take(order[:count], f"{fraction:.0%} held out")


@dataclasses.dataclass
class Encoded:
    """Model inputs of a split, padded to max_seq_length."""

    input_ids: np.ndarray  # [n, length] int32
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray | None
    ids: list[str]
    truncated: int  # examples that did not fit

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_inputs(
    inputs: list[str | tuple[str, str]], tokenizer: tokenizers.Tokenizer, max_seq_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(input_ids, token_type_ids, attention_mask, truncated count) of texts and pairs, padded to
    max_seq_length with the BERT template, the longer text of a pair truncated first."""
    tokenizer.enable_truncation(max_seq_length, strategy="longest_first")
    tokenizer_lib.pad_to(tokenizer, max_seq_length)
    try:
        encodings = tokenizer.encode_batch(inputs)
    finally:
        tokenizer.no_padding()
        tokenizer.no_truncation()
    return (
        np.asarray([e.ids for e in encodings], np.int32).reshape(-1, max_seq_length),
        np.asarray([e.type_ids for e in encodings], np.int32).reshape(-1, max_seq_length),
        np.asarray([e.attention_mask for e in encodings], np.int32).reshape(-1, max_seq_length),
        sum(1 for e in encodings if e.overflowing),
    )


def encode(examples: Examples, tokenizer: tokenizers.Tokenizer, max_seq_length: int) -> Encoded:
    """Model inputs of a split (see `encode_inputs`)."""
    inputs: list[Any] = (
        list(zip(examples.text_a, examples.text_b)) if examples.text_b is not None else list(examples.text_a)
    )
    input_ids, token_type_ids, attention_mask, truncated = encode_inputs(inputs, tokenizer, max_seq_length)
    return Encoded(input_ids, token_type_ids, attention_mask, examples.labels, examples.ids, truncated)
