"""Tagged sentences for token classification (named entities): readers and encoding.

Two layouts are read:

* CoNLL: one token per line, the token in the first column and its tag in the last, columns
  separated by spaces or tabs (CoNLL-2003's `token POS chunk tag`); a blank or whitespace-only
  line ends a sentence; `-DOCSTART-` lines are skipped. A file whose lines hold the token alone
  is unlabelled (a file to predict).
* JSONL: one sentence per line, `{"tokens": [...], "tags": [...]}` (`tags` absent: unlabelled).

Every tag is checked against the tag scheme (IOB1, IOB2, IOBES) and the task's tags; a bad line
is a `DataError` naming the file and line. `encode` puts each word's label on its first
sub-token and splits a sentence too long for the model into consecutive windows, so that every
word is predicted exactly once.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tokenizers

from bertjax import fileio
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.errors import DataError

IGNORE = -1  # the label of positions that are not a word's first sub-token


SCHEME_PREFIXES = {"iob1": "BI", "iob2": "BI", "iobes": "BIES"}


def bad_tag(tag: str, scheme: str) -> str:
    """Why `tag` is not a tag of `scheme`, or ''."""
    if tag == "O":
        return ""
    prefix, _, kind = tag.partition("-")
    if len(prefix) != 1 or prefix not in SCHEME_PREFIXES[scheme] or not kind:
        allowed = ", ".join(f"{p}-<type>" for p in SCHEME_PREFIXES[scheme])
        return f"tag {tag!r} is not one of {scheme}'s (O, {allowed})"
    return ""


@dataclasses.dataclass
class Sentences:
    """A split's sentences: words, tags (None: unlabelled) and where each word was read."""

    words: list[list[str]]
    tags: list[list[str]] | None
    source: str
    file_format: str  # "conll" or "jsonl"
    lines: list[list[int]]  # each word's 0-based line in the file (CoNLL), to write predictions beside it

    def __len__(self) -> int:
        return len(self.words)


def _text_lines(path: Path) -> list[str]:
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"data file {path} {problem}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {e.start})") from None


def _read_conll(path: Path) -> Sentences:
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[list[int]] = []
    labelled: bool | None = None
    current: tuple[list[str], list[str], list[int]] = ([], [], [])
    for index, line in enumerate([*_text_lines(path), ""]):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if current[0]:
                words.append(current[0])
                tags.append(current[1])
                lines.append(current[2])
                current = ([], [], [])
            continue
        if labelled is None:
            labelled = len(fields) > 1
        if labelled != (len(fields) > 1):
            expected = "a token and its tag" if labelled else "a token alone, as the lines before"
            raise DataError(f"{path} line {index + 1}: expected {expected}, got {line.strip()!r}")
        current[0].append(fields[0])
        current[1].append(fields[-1])
        current[2].append(index)
    if not words:
        raise DataError(f"{path} holds no sentences")
    return Sentences(words, tags if labelled else None, str(path), "conll", lines)


def _read_jsonl(path: Path) -> Sentences:
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[list[int]] = []
    labelled: bool | None = None
    for index, line in enumerate(_text_lines(path)):
        if not line.strip():
            continue
        where = f"{path} line {index + 1}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("tokens"), list):
            raise DataError(f"{where}: expected an object with a list of strings under 'tokens'")
        tokens = record["tokens"]
        if labelled is None:
            labelled = "tags" in record
        if labelled != ("tags" in record):
            raise DataError(f"{where}: {'no' if labelled else 'a'} 'tags' list, unlike the lines before")
        sentence_tags = record.get("tags", tokens)
        if not isinstance(sentence_tags, list) or len(sentence_tags) != len(tokens):
            raise DataError(f"{where}: 'tags' must be a list as long as 'tokens' ({len(tokens)})")
        if not all(isinstance(x, str) and x for x in [*tokens, *sentence_tags]):
            raise DataError(f"{where}: tokens and tags must be non-empty strings")
        if tokens:
            words.append(tokens)
            tags.append(sentence_tags)
            lines.append([index] * len(tokens))
    if not words:
        raise DataError(f"{path} holds no sentences")
    return Sentences(words, tags if labelled else None, str(path), "jsonl", lines)


def read_file(path: str | Path, file_format: str = "") -> Sentences:
    """A CoNLL or JSONL file (JSONL by a .jsonl/.json suffix unless `file_format` says)."""
    path = Path(path)
    fmt = file_format or ("jsonl" if path.suffix in (".jsonl", ".json") else "conll")
    return _read_jsonl(path) if fmt in ("jsonl", "json") else _read_conll(path)


def check_tags(sentences: Sentences, scheme: str, labels: tuple[str, ...]) -> None:
    """Every tag is one of `scheme`'s and of `labels`; else a DataError naming file and line."""
    if sentences.tags is None:
        return
    known = set(labels)
    for tags, lines in zip(sentences.tags, sentences.lines):
        for tag, line in zip(tags, lines):
            problem = bad_tag(tag, scheme) or ("" if tag in known else f"tag {tag!r} is not one of {sorted(known)}")
            if problem:
                raise DataError(f"{sentences.source} line {line + 1}: {problem}")


@dataclasses.dataclass
class EncodedTags:
    """Model inputs of a split's windows, padded to max_seq_length, and where each word went."""

    input_ids: np.ndarray  # [windows, length] int32
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray  # [windows, length]: tag id at each word's first sub-token, IGNORE elsewhere
    # For each sentence, (window, position) of each word's first sub-token.
    word_positions: list[np.ndarray]
    windows_of_long_sentences: int  # windows beyond the first, of sentences longer than one window


def word_pieces(words: list[list[str]], tokenizer: tokenizers.Tokenizer) -> dict[str, list[int]]:
    """Each distinct word's pieces (a word the normaliser empties becomes the unknown token). A
    byte-level BPE tokenizer reads each word after a space, as inside a sentence (transformers'
    `add_prefix_space=True`, which its NER examples ask of RoBERTa)."""
    distinct = sorted({w for sentence in words for w in sentence})
    space = " " if tokenizer_lib.word_start_mark(tokenizer) == tokenizer_lib.WORD_START_MARKS["ByteLevel"] else ""
    encodings = tokenizer.encode_batch([[space + w] for w in distinct], is_pretokenized=True, add_special_tokens=False)
    unk = tokenizer_lib.special_ids(tokenizer).unk
    return {w: e.ids or [unk] for w, e in zip(distinct, encodings)}


def encode(
    sentences: Sentences, tokenizer: tokenizers.Tokenizer, max_seq_length: int, labels: tuple[str, ...]
) -> EncodedTags:
    """`[CLS] pieces [SEP]` windows: a sentence whose pieces do not fit in one continues in the
    next window at a word boundary (a word longer than a window keeps its first pieces)."""
    pieces = word_pieces(sentences.words, tokenizer)
    label_id = {tag: i for i, tag in enumerate(labels)}
    special = tokenizer_lib.special_ids(tokenizer)
    cls, sep = special.cls, special.sep
    budget = max_seq_length - 2
    rows_ids: list[list[int]] = []
    rows_labels: list[list[int]] = []
    word_positions = []
    extra = 0
    for s, sentence in enumerate(sentences.words):
        tags = sentences.tags[s] if sentences.tags is not None else None
        positions = np.zeros((len(sentence), 2), np.int32)
        ids, row_labels = [cls], [IGNORE]
        for w, word in enumerate(sentence):
            word_ids = pieces[word][:budget]
            if len(ids) - 1 + len(word_ids) > budget:  # the window is full: close it, open the next
                rows_ids.append([*ids, sep])
                rows_labels.append([*row_labels, IGNORE])
                ids, row_labels = [cls], [IGNORE]
                extra += 1
            positions[w] = (len(rows_ids), len(ids))
            ids += word_ids
            row_labels += [label_id[tags[w]] if tags is not None else 0] + [IGNORE] * (len(word_ids) - 1)
        rows_ids.append([*ids, sep])
        rows_labels.append([*row_labels, IGNORE])
        word_positions.append(positions)
    n = len(rows_ids)
    input_ids = np.full((n, max_seq_length), special.pad, np.int32)
    label_array = np.full((n, max_seq_length), IGNORE, np.int32)
    attention_mask = np.zeros((n, max_seq_length), np.int32)
    for r, (ids, row_labels) in enumerate(zip(rows_ids, rows_labels)):
        input_ids[r, : len(ids)] = ids
        label_array[r, : len(ids)] = row_labels
        attention_mask[r, : len(ids)] = 1
    return EncodedTags(input_ids, np.zeros_like(input_ids), attention_mask, label_array, word_positions, extra)


def predicted_tags(encoded: EncodedTags, outputs: np.ndarray, labels: tuple[str, ...]) -> list[list[str]]:
    """Each sentence's predicted tags from the windows' logits [windows, length, tags]."""
    best = outputs.argmax(-1)
    return [[labels[i] for i in best[p[:, 0], p[:, 1]]] for p in encoded.word_positions]


def write_predictions(sentences: Sentences, predicted: list[list[str]], path: Path) -> Path:
    """conlleval's input layout: the CoNLL file's lines with the predicted tag added as a last
    column (`-DOCSTART-` and blank lines as they were); from JSONL, `token [gold] predicted` lines
    with a blank line after each sentence."""
    if sentences.file_format == "conll":
        out = Path(sentences.source).read_text(encoding="utf-8").splitlines()
        for lines, tags in zip(sentences.lines, predicted):
            for line, tag in zip(lines, tags):
                out[line] = f"{out[line].rstrip()} {tag}"
        text = "\n".join(out) + "\n"
    else:
        blocks = []
        for s, (words, tags) in enumerate(zip(sentences.words, predicted)):
            gold = sentences.tags[s] if sentences.tags is not None else None
            rows = [f"{w} {gold[i]} {t}" if gold else f"{w} {t}" for i, (w, t) in enumerate(zip(words, tags))]
            blocks.append("\n".join(rows))
        text = "\n\n".join(blocks) + "\n"
    fileio.write_text_atomically(path, text)
    return path
