"""Pretraining text as documents: each document a list of sentences.

Two sources, one shape:

* text files (`read_text_files`), in google-research/bert's format (`"sentences"`: one sentence
  per line, a blank line between documents) or as paragraphs (`"paragraphs"`: one paragraph per
  line, a blank line between documents; paragraphs are split into sentences by
  `split_sentences`);
* a TFDS text dataset (`read_tfds`), read by random access through `tfds.data_source`
  (array_record, no TensorFlow); each record is a document whose text is split at newlines into
  paragraphs and then into sentences.

Missing, empty or non-UTF-8 files raise `DataError` naming the file (and line).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from bertjax import fileio
from bertjax.errors import DataError

Document = list[str]

# Abbreviations after which a period does not end a sentence (lower-cased, without the period).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft gen gov sen rep col lt capt sgt cmdr adm rev hon pres supt "
    "vs etc cf al approx dept est fig no nos vol jan feb mar apr aug sep sept oct nov dec inc corp ltd co".split()
)
# A candidate boundary: sentence-final punctuation, optional closing quotes/brackets, whitespace,
# then what may start a sentence (an upper-case letter, a digit or an opening quote/bracket).
_BOUNDARY = re.compile(r"""([.!?]+["'”’)\]]*)\s+(?=["'“‘(\[]?[A-Z0-9])""")


def split_sentences(paragraph: str) -> list[str]:
    """Splits a paragraph into sentences by rule (periods after abbreviations and initials kept)."""
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(paragraph):
        end = match.end(1)
        word = paragraph[start:end].split()[-1].rstrip("\"'”’)]")
        if word.endswith("."):
            stem = word[:-1].lstrip("\"'“‘([")
            if stem.lower() in _ABBREVIATIONS or (len(stem) == 1 and stem.isupper()):
                continue  # "Dr. Smith", "J. Smith"
        sentences.append(paragraph[start:end].strip())
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def expand_files(patterns: Iterable[str]) -> list[Path]:
    """The files matched by comma-separated glob patterns, in order; a pattern matching nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise DataError(f"corpus file {pattern} does not exist")
        for match in matches:
            if not Path(match).is_file():
                raise DataError(f"corpus file {match} is not a file")
            files.append(Path(match))
    return files


def _lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, with the line number of the first undecodable byte in the error."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"corpus file {path} line {number} is not UTF-8") from None


def read_text_file(path: str | Path, corpus_format: str) -> Iterator[Document]:
    """The documents of one text file (see the module docstring for the two formats)."""
    path = Path(path)
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"corpus file {path} {problem}")
    if corpus_format not in ("sentences", "paragraphs"):
        raise DataError(f"unknown corpus format {corpus_format!r} (expected sentences or paragraphs)")
    document: Document = []
    found = False
    for line in _lines(path):
        line = line.strip()
        if not line:
            if document:
                found = True
                yield document
            document = []
        elif corpus_format == "sentences":
            document.append(line)
        else:
            document.extend(split_sentences(line))
    if document:
        found = True
        yield document
    if not found:
        raise DataError(f"corpus file {path} is empty")


def read_text_files(patterns: Iterable[str], corpus_format: str) -> Iterator[Document]:
    """The documents of every file matched by `patterns`, file after file."""
    for path in expand_files(patterns):
        yield from read_text_file(path, corpus_format)


def text_to_document(text: str) -> Document:
    """A document from a text with one paragraph per line."""
    return [s for line in text.splitlines() for s in split_sentences(" ".join(line.split()))]


def read_tfds(name: str, split: str, text_feature: str, data_dir: str = "") -> Iterator[Document]:
    """The documents of a TFDS text dataset split (e.g. `wikipedia/20230601.en`, `train`).

    Online, TFDS downloads and prepares the builder on first use; offline, `data_dir` must hold
    the prepared dataset. Records are read in order through `tfds.data_source`.
    """
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # unknown name, missing prepared data, no network, bad split
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"TFDS dataset {name} split {split} cannot be read: {reason}") from None
    if len(source) == 0:
        raise DataError(f"TFDS dataset {name} split {split} is empty")
    for index in range(len(source)):
        record = source[index]
        if text_feature not in record:
            features = ", ".join(sorted(record))
            raise DataError(f"TFDS dataset {name} has no feature {text_feature!r} (it has {features})")
        text = record[text_feature]
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        document = text_to_document(str(text))
        if document:
            yield document
