"""Prediction on new inputs with a fine-tuned model: labels, scores, entities and answers.

`load_predictor(checkpoint)` reads a fine-tuning run directory (its `best/` model and its task
settings), a bertjax model checkpoint or a Hugging Face folder, and tells the task from the head
it holds: a sequence classifier (labels with probabilities; one output: a regression score), a
token classifier (tags and entities) or a span head (answers). `predict_file` reads the inputs
in the form that suits the task and returns one JSON-ready record per input, in input order:

* classification / regression: text lines (`a ||| b` for a pair), JSONL (`text`, or `text_a` and
  `text_b`) or a TSV/CSV file with a header (the columns named by `text_a` / `text_b`);
* tagging: text lines (split into words like BERT's pre-tokeniser), JSONL (`tokens`, or `text`)
  or a CoNLL file; each entity with its type and character offsets in the line (in the tokens
  joined by spaces, for tokens given);
* question answering: JSONL (`question`, `context`, optional `id`) or a SQuAD-layout JSON file;
  the answer with its character offsets in the context and its probability.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import tokenizers
import tqdm
from tokenizers.pre_tokenizers import BertPreTokenizer

from bertjax import fileio
from bertjax.config import TaskConfig
from bertjax.data import labelled, squad, tagging
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import CheckpointError, DataError
from bertjax.model.bert import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertjax.tasks import entities
from bertjax.weights import pretrained
from bertjax.weights.param_tree import unflatten

FORMATS = ("lines", "jsonl", "tsv", "csv", "conll", "squad")
_BY_SUFFIX = {".jsonl": "jsonl", ".json": "squad", ".tsv": "tsv", ".csv": "csv", ".conll": "conll"}


@dataclasses.dataclass
class Predictor:
    """A fine-tuned model ready to predict: its task kind, model, parameters and tokenizer."""

    kind: str  # "classification", "regression", "tagging" or "qa"
    model: nn.Module
    params: Any
    tokenizer: tokenizers.Tokenizer
    labels: tuple[str, ...]
    task: TaskConfig  # max_seq_length and, for QA, the window and decoding settings
    apply: Any = None

    def outputs(self, features: dict[str, np.ndarray], batch_size: int, show_progress: bool = True) -> np.ndarray:
        """The model's outputs for every row, in fixed-shape batches (one compilation)."""
        if self.apply is None:
            self.apply = jax.jit(lambda p, i, t, m: self.model.apply({"params": p}, i, t, m))
        keys = ("input_ids", "token_type_ids", "attention_mask")
        n, out = len(features["input_ids"]), []
        for start in tqdm.trange(0, n, batch_size, unit="batch", disable=not show_progress):
            rows = slice(start, start + batch_size)
            count = len(features["input_ids"][rows])
            batch = [np.pad(features[k][rows], ((0, batch_size - count), (0, 0))) for k in keys]
            out.append(np.asarray(jax.device_get(self.apply(self.params, *batch)))[:count])
        return np.concatenate(out)


def _kind(loaded: pretrained.Pretrained, where: str) -> str:
    groups = loaded.groups()
    if "classifier" in groups:
        return "regression" if loaded.params["classifier/bias"].shape[0] == 1 else "classification"
    if "token_classifier" in groups:
        return "tagging"
    if "qa_outputs" in groups:
        return "qa"
    raise CheckpointError(f"{where} has no fine-tuned head (classifier, token classifier or span head)")


def _run_task_config(folder: Path) -> TaskConfig:
    """The task settings of the fine-tuning run whose `best/` is `folder` (defaults elsewhere)."""
    record_file = folder.parent / "config.json"
    if folder.name != "best" or not record_file.is_file():
        return TaskConfig()
    task = json.loads(record_file.read_text()).get("config", {}).get("task", {})
    fields = {f.name for f in dataclasses.fields(TaskConfig)}
    return TaskConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in task.items() if k in fields})


def load_predictor(checkpoint: str | Path, max_seq_length: int = 0, **task_settings: Any) -> Predictor:
    """The model in `checkpoint`: a fine-tuning run directory (its best/), a bertjax model
    checkpoint or a Hugging Face folder with a fine-tuned head. The task settings are the run's
    (else TaskConfig's defaults, 384 tokens for QA), replaced by `max_seq_length` and
    `task_settings` (TaskConfig fields: doc_stride, max_query_length, ...) where given."""
    path = Path(checkpoint)
    if (path / "best").is_dir() and not (path / pretrained.MODEL_FILE).is_file():
        path = path / "best"
    loaded = pretrained.load(path)
    kind = _kind(loaded, str(checkpoint))
    task = _run_task_config(path)
    if max_seq_length:
        task = dataclasses.replace(task, max_seq_length=max_seq_length)
    elif kind == "qa" and task.name != "squad":
        task = dataclasses.replace(task, max_seq_length=384)
    task = dataclasses.replace(task, **{k: v for k, v in task_settings.items() if v})
    if kind == "qa" and task.doc_stride >= task.max_seq_length - task.max_query_length - 3:
        raise DataError(
            f"doc_stride={task.doc_stride} must be below max_seq_length - max_query_length - 3 = "
            f"{task.max_seq_length - task.max_query_length - 3}"
        )
    if task.max_seq_length > loaded.config.max_position_embeddings:
        raise DataError(
            f"max_seq_length={task.max_seq_length} exceeds the model's {loaded.config.max_position_embeddings}"
        )
    if loaded.vocab_file is None:
        raise CheckpointError(f"checkpoint {checkpoint} has no vocab.txt or tokenizer.json")
    tokenizer = load_tokenizer(loaded.vocab_file, loaded.lowercase)
    pretrained.check_vocab(loaded, tokenizer.get_vocab_size(), loaded.vocab_file)
    config = dataclasses.replace(loaded.config, scan_layers=False, hidden_dropout_prob=0.0)  # params: one per layer
    labels = loaded.labels
    if kind in ("classification", "regression"):
        model: nn.Module = BertForSequenceClassification(config, loaded.params["classifier/bias"].shape[0])
    elif kind == "tagging":
        model = BertForTokenClassification(config, loaded.params["token_classifier/bias"].shape[0])
    else:
        model = BertForQuestionAnswering(config)
    if kind in ("classification", "tagging") and not labels:
        count = loaded.params[f"{'classifier' if kind == 'classification' else 'token_classifier'}/bias"].shape[0]
        labels = tuple(f"LABEL_{i}" for i in range(count))
    keep = (lambda k: pretrained.component(k) != "pooler") if kind in ("tagging", "qa") else (lambda k: True)
    params = unflatten({k: v for k, v in loaded.params.items() if keep(k)})
    return Predictor(kind, model, params, tokenizer, labels, task)


def input_format(path: str | Path, given: str = "") -> str:
    return given or _BY_SUFFIX.get(Path(path).suffix, "lines")


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = list(labelled.rows_of_jsonl(path))
    if not rows:
        raise DataError(f"input file {path} is empty")
    return rows


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _predict_sequences(p: Predictor, path: Path, fmt: str, text_a: str, text_b: str, **kw: Any) -> list[dict]:
    if fmt == "lines":
        from bertjax.extract import read_texts

        inputs = read_texts(path)
    elif fmt == "jsonl":
        inputs = []
        for number, record in _jsonl(path):
            a = record.get("text_a", record.get("text"))
            b = record.get("text_b")
            if not isinstance(a, str) or (b is not None and not isinstance(b, str)):
                raise DataError(f"{path} line {number}: expected a string under 'text' (or 'text_a', 'text_b')")
            inputs.append((a, b) if b is not None else a)
    elif fmt in ("tsv", "csv"):
        spec = labelled.TaskSpec("predict", "classification", (), (), {})
        examples = labelled.read_file(path, spec, labelled.Layout(text_a, text_b), fmt)
        inputs = list(zip(examples.text_a, examples.text_b)) if examples.text_b else list(examples.text_a)
    else:
        raise DataError(f"--format={fmt} does not suit a sequence classifier (lines, jsonl, tsv or csv)")
    ids, types, mask, _ = labelled.encode_inputs(inputs, p.tokenizer, p.task.max_seq_length)
    logits = p.outputs({"input_ids": ids, "token_type_ids": types, "attention_mask": mask}, **kw)
    if p.kind == "regression":
        return [{"score": float(row[0])} for row in logits]
    probabilities = _softmax(logits)
    return [
        {"label": p.labels[int(row.argmax())], "probabilities": dict(zip(p.labels, map(float, row)))}
        for row in probabilities
    ]


def _words_of_text(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    pieces = BertPreTokenizer().pre_tokenize_str(text)
    return [w for w, _ in pieces], [span for _, span in pieces]


def _spans_of_tokens(tokens: list[str]) -> list[tuple[int, int]]:
    """Each token's characters in the tokens joined by single spaces."""
    spans, at = [], 0
    for token in tokens:
        spans.append((at, at + len(token)))
        at += len(token) + 1
    return spans


def _predict_tags(p: Predictor, path: Path, fmt: str, **kw: Any) -> list[dict]:
    texts: list[str] = []
    words: list[list[str]] = []
    spans: list[list[tuple[int, int]]] = []
    if fmt == "lines":
        for raw in text_lines(path):
            w, s = _words_of_text(raw)
            texts.append(raw)
            words.append(w)
            spans.append(s)
    elif fmt == "jsonl":
        for number, record in _jsonl(path):
            tokens = record.get("tokens")
            if isinstance(tokens, list) and all(isinstance(t, str) and t for t in tokens):
                texts.append(" ".join(tokens))
                words.append(tokens)
                spans.append(_spans_of_tokens(tokens))
            elif isinstance(record.get("text"), str):
                w, s = _words_of_text(record["text"])
                texts.append(record["text"])
                words.append(w)
                spans.append(s)
            else:
                raise DataError(f"{path} line {number}: expected 'tokens' (a list of strings) or 'text'")
    elif fmt == "conll":
        sentences = tagging.read_file(path, "conll")
        words = sentences.words
        texts = [" ".join(w) for w in words]
        spans = [_spans_of_tokens(w) for w in words]
    else:
        raise DataError(f"--format={fmt} does not suit a tagger (lines, jsonl or conll)")
    sentences = tagging.Sentences(words, None, str(path), "jsonl", [[0] * len(w) for w in words])
    encoded = tagging.encode(sentences, p.tokenizer, p.task.max_seq_length, p.labels)
    features = {"input_ids": encoded.input_ids, "token_type_ids": encoded.token_type_ids}
    features["attention_mask"] = encoded.attention_mask
    tags = tagging.predicted_tags(encoded, p.outputs(features, **kw), p.labels)
    records = []
    for text, sentence, sentence_spans, sentence_tags in zip(texts, words, spans, tags):
        found = []
        for kind, first, last in entities.entities(sentence_tags):
            start, end = sentence_spans[first][0], sentence_spans[last][1]
            found.append({"type": kind, "text": text[start:end], "start": start, "end": end})
        records.append({"text": text, "tokens": sentence, "tags": sentence_tags, "entities": found})
    return records


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, with a clear error for a bad file."""
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"input file {path} {problem}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"input file {path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    if not lines:
        raise DataError(f"input file {path} is empty")
    return lines


def _predict_answers(p: Predictor, path: Path, fmt: str, **kw: Any) -> list[dict]:
    task = p.task
    if fmt == "squad":
        questions = squad.read_file(path, task.version_2_with_negative)
    elif fmt == "jsonl":
        items = []
        for number, record in _jsonl(path):
            if not isinstance(record.get("question"), str) or not isinstance(record.get("context"), str):
                raise DataError(f"{path} line {number}: expected strings under 'question' and 'context'")
            qid = str(record.get("id", number))
            items.append(squad.Question(qid, record["question"], record["context"], []))
        if not items:
            raise DataError(f"input file {path} holds no questions")
        questions = squad.Questions(items, str(path), False)
    else:
        raise DataError(f"--format={fmt} does not suit question answering (jsonl or squad)")
    windows = squad.encode(questions, p.tokenizer, task.max_seq_length, task.doc_stride, task.max_query_length)
    features = {"input_ids": windows.input_ids, "token_type_ids": windows.token_type_ids}
    features["attention_mask"] = windows.attention_mask
    decoded = squad.decode(
        questions,
        windows,
        p.outputs(features, **kw),
        task.n_best_size,
        task.max_answer_length,
        task.version_2_with_negative,
        task.null_score_diff_threshold,
    )
    records = []
    for question in questions.questions:
        answer = decoded.answers[question.id]
        best = next((c for c in decoded.nbest[question.id] if c["text"] == answer), decoded.nbest[question.id][0])
        start, end = (best["start"], best["end"]) if answer else (-1, -1)
        records.append(
            {"id": question.id, "answer": answer, "start": start, "end": end, "probability": best["probability"]}
        )
    return records


def predict_file(
    predictor: Predictor,
    input_path: str | Path,
    file_format: str = "",
    batch_size: int = 32,
    text_a: str = "text",
    text_b: str = "",
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """One record per input of `input_path` (see the module docstring)."""
    path = Path(input_path)
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"input file {path} {problem}")
    fmt = input_format(path, file_format)
    kw = {"batch_size": batch_size, "show_progress": show_progress}
    if predictor.kind in ("classification", "regression"):
        return _predict_sequences(predictor, path, fmt, text_a, text_b, **kw)
    if predictor.kind == "tagging":
        return _predict_tags(predictor, path, fmt, **kw)
    return _predict_answers(predictor, path, fmt, **kw)
