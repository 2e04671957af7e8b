"""`bertjax.inference`: each kind of fine-tuned model predicts from each input format, with the
model's own outputs (checked against a direct forward pass)."""

import json

import jax
import numpy as np
import pytest
from flax import linen as nn

from bertjax import inference
from bertjax.config import ModelConfig
from bertjax.data.labelled import encode_inputs
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import CheckpointError, DataError
from bertjax.model.bert import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertjax.weights import param_tree, pretrained

CONFIG = ModelConfig(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


def _checkpoint(tmp_path, vocab_file, kind, labels=()):
    model = {
        "classification": lambda: BertForSequenceClassification(CONFIG, len(labels)),
        "regression": lambda: BertForSequenceClassification(CONFIG, 1),
        "tagging": lambda: BertForTokenClassification(CONFIG, len(labels)),
        "qa": lambda: BertForQuestionAnswering(CONFIG),
    }[kind]()
    ids = np.ones((1, 8), np.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids, ids, ids)["params"])
    flat = param_tree.flatten(jax.tree.map(np.asarray, params))
    checkpoint = pretrained.Pretrained(CONFIG, flat, vocab_file, True, "bertjax", tmp_path, tuple(labels))
    return pretrained.save(checkpoint, tmp_path / kind), model, params


def test_classification_from_lines_jsonl_and_tsv(tmp_path, vocab_file):
    labels = ("negative", "neutral", "positive")
    folder, model, params = _checkpoint(tmp_path, vocab_file, "classification", labels)
    predictor = inference.load_predictor(folder, max_seq_length=16)
    assert predictor.kind == "classification" and predictor.labels == labels
    texts = ["a fine film", "dull ||| and long"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "in.jsonl").write_text('{"text": "a fine film"}\n{"text_a": "dull", "text_b": "and long"}\n')
    (tmp_path / "in.tsv").write_text("id\ttext\tother\n1\ta fine film\tdull\n")
    lines = inference.predict_file(predictor, tmp_path / "in.txt", show_progress=False)
    jsonl = inference.predict_file(predictor, tmp_path / "in.jsonl", show_progress=False)
    assert lines == jsonl and len(lines) == 2
    ids, types, mask, _ = encode_inputs(["a fine film", ("dull", "and long")], load_tokenizer(vocab_file), 16)
    logits = np.asarray(model.apply({"params": params}, ids, types, mask))
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for record, row in zip(lines, expected):
        assert record["label"] == labels[row.argmax()]
        np.testing.assert_allclose([record["probabilities"][label] for label in labels], row, rtol=1e-5)
    table = inference.predict_file(predictor, tmp_path / "in.tsv", text_b="other", show_progress=False)
    assert len(table) == 1 and set(table[0]["probabilities"]) == set(labels)


def test_regression_gives_a_score(tmp_path, vocab_file):
    folder, model, params = _checkpoint(tmp_path, vocab_file, "regression")
    predictor = inference.load_predictor(folder, max_seq_length=16)
    (tmp_path / "in.txt").write_text("a fine film\n")
    [record] = inference.predict_file(predictor, tmp_path / "in.txt", show_progress=False)
    ids, types, mask, _ = encode_inputs(["a fine film"], load_tokenizer(vocab_file), 16)
    assert record["score"] == pytest.approx(float(model.apply({"params": params}, ids, types, mask)[0, 0]), rel=1e-5)


def test_tagging_gives_entities_with_character_offsets(tmp_path, vocab_file):
    labels = ("B-LOC", "B-PER", "I-PER", "O")
    folder, _, _ = _checkpoint(tmp_path, vocab_file, "tagging", labels)
    predictor = inference.load_predictor(folder, max_seq_length=8)  # long lines continue in more windows
    line = "Zoë  Kravitz went to São Paulo, then to 東京 again and again and again."
    (tmp_path / "in.txt").write_text(line + "\n")
    (tmp_path / "in.jsonl").write_text(json.dumps({"tokens": ["Zoë", "Kravitz", "went"]}) + "\n")
    [record] = inference.predict_file(predictor, tmp_path / "in.txt", show_progress=False)
    assert record["tokens"][:3] == ["Zoë", "Kravitz", "went"] and "東京" in record["tokens"]
    assert len(record["tags"]) == len(record["tokens"]) and set(record["tags"]) <= set(labels)
    for entity in record["entities"]:
        assert line[entity["start"] : entity["end"]] == entity["text"] and entity["type"] in ("LOC", "PER")
    [from_tokens] = inference.predict_file(predictor, tmp_path / "in.jsonl", show_progress=False)
    assert from_tokens["text"] == "Zoë Kravitz went" and len(from_tokens["tags"]) == 3


def test_qa_gives_an_answer_span_of_the_context(tmp_path, vocab_file):
    folder, _, _ = _checkpoint(tmp_path, vocab_file, "qa")
    predictor = inference.load_predictor(folder, max_seq_length=32, doc_stride=8, max_query_length=8)
    context = "The  résumé was written in 1995 by Zoë Kravitz, who lives in São Paulo. " * 3
    (tmp_path / "in.jsonl").write_text(json.dumps({"question": "Who wrote it?", "context": context}) + "\n")
    [record] = inference.predict_file(predictor, tmp_path / "in.jsonl", show_progress=False)
    assert record["id"] == "1" and record["answer"] == context[record["start"] : record["end"]]
    assert record["answer"] and 0 < record["probability"] <= 1


def test_bad_inputs(tmp_path, vocab_file):
    folder, _, _ = _checkpoint(tmp_path, vocab_file, "qa")
    predictor = inference.load_predictor(folder, max_seq_length=32, doc_stride=8, max_query_length=8)
    (tmp_path / "in.txt").write_text("a question\n")
    with pytest.raises(DataError, match="--format=lines does not suit question answering"):
        inference.predict_file(predictor, tmp_path / "in.txt")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "context": "c"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match="bad.jsonl line 2: expected strings under 'question' and 'context'"):
        inference.predict_file(predictor, tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="doc_stride=64 must be below"):
        inference.load_predictor(folder, max_seq_length=32, doc_stride=64)
    encoder = pretrained.Pretrained(
        CONFIG,
        {k: v for k, v in pretrained.load(folder).params.items() if k.startswith("bert/")},
        vocab_file,
        True,
        "bertjax",
        tmp_path,
    )
    with pytest.raises(CheckpointError, match="has no fine-tuned head"):
        inference.load_predictor(pretrained.save(encoder, tmp_path / "encoder"))
