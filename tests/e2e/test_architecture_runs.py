"""Modern encoder architectures through the command-line runs: HF folders fine-tune, RoBERTa pretrains."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_finetune import finetune, write_toy
from test_qa_and_ner import predict

ROOT = Path(__file__).resolve().parents[2]


def test_modernbert_folder_fine_tunes_from_its_encoder(tmp_path, vocab_file):
    """A Hugging Face ModernBERT folder (random weights, the sample WordPiece vocab) as
    `--config.init`: its encoder is loaded into a scanned encoder (layer 0, which has no attention
    norm, apart from the stacked layers 1 and 2), rotary positions and sliding windows included,
    and the toy sentiment task is learned."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    vocab_size = len(vocab_file.read_text(encoding="utf-8").splitlines())
    config = transformers.ModernBertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        local_attention=8,
        global_attn_every_n_layers=2,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        bos_token_id=101,
        eos_token_id=102,
    )
    folder = tmp_path / "modernbert"
    transformers.ModernBertForMaskedLM(config).save_pretrained(folder)
    shutil.copy(vocab_file, folder / "vocab.txt")
    _fine_tunes_the_toy_task(
        folder, tmp_path, f"--config.task.vocab_file={vocab_file}", "--config.model.scan_layers=True"
    )


def test_electra_discriminator_fine_tunes_and_exports_its_classification_head(tmp_path, vocab_file):
    """A Hugging Face ELECTRA discriminator folder (factorised embeddings 32 wide under a hidden size
    of 64) as `--config.init`: its encoder is loaded, the toy task is learned with ELECTRA's GELU
    classification head, and `to-hf` writes an ElectraForSequenceClassification that transformers
    loads with no missing or unexpected keys and whose probabilities are `predict`'s."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    vocab_size = len(vocab_file.read_text(encoding="utf-8").splitlines())
    config = transformers.ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=32,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    folder = tmp_path / "electra"
    transformers.ElectraForPreTraining(config).save_pretrained(folder)
    shutil.copy(vocab_file, folder / "vocab.txt")
    workdir, toy = _fine_tunes_the_toy_task(folder, tmp_path)
    texts = [line.split("\t")[0] for line in (toy / "test.tsv").read_text().splitlines()[1:]]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    predict(f"--checkpoint={workdir / 'best'}", f"--input={tmp_path / 'texts.txt'}", f"--output={tmp_path / 'p.jsonl'}")
    ours = [json.loads(line)["probabilities"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    command = [sys.executable, "-m", "bertjax.convert", "to-hf", str(workdir / "best"), str(tmp_path / "hf")]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    hf, info = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.softmax(hf.eval()(**batch).logits, -1).numpy()
    labels = [hf.config.id2label[i] for i in range(2)]
    got = np.array([[row[label] for label in labels] for row in ours])
    np.testing.assert_allclose(got, theirs, atol=1e-5)


def _fine_tunes_the_toy_task(folder, tmp_path, *extra):
    """The toy sentiment task fine-tuned from `folder`'s encoder to >= 0.9 test accuracy; the
    workdir and the toy data folder."""
    toy = write_toy(tmp_path / "toy")
    workdir = tmp_path / "run"
    finetune(
        workdir,
        f"--config.init={folder}",
        f"--config.task.train_file={toy / 'train.tsv'}",
        f"--config.task.test_file={toy / 'test.tsv'}",
        "--config.train.num_epochs=3",
        "--config.optim.learning_rate=1e-3",
        *extra,
    )
    results = json.loads((workdir / "results.json").read_text())
    assert results["load_report"]["loaded"] == ["encoder"]
    assert results["test"]["test"]["accuracy"] >= 0.9, results["test"]
    return workdir, toy


def test_roberta_folder_fine_tunes_with_its_own_bpe_tokenizer(tmp_path, bpe_folder):
    """A Hugging Face RoBERTa folder holding only a byte-level BPE tokenizer.json (no vocab.txt):
    the run reads the tokenizer from the folder (`<s> A </s>`, <pad> = 1, one token type), learns
    the toy task, and its best checkpoint keeps that tokenizer.json for `predict`."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.RobertaConfig(
        vocab_size=2000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    folder = tmp_path / "roberta"
    transformers.RobertaForMaskedLM(config).save_pretrained(folder)
    shutil.copy(bpe_folder / "tokenizer.json", folder / "tokenizer.json")
    workdir, toy = _fine_tunes_the_toy_task(folder, tmp_path, "--config.task.max_seq_length=128")
    assert (workdir / "best" / "tokenizer.json").read_bytes() == (bpe_folder / "tokenizer.json").read_bytes()
    rows = [line.split("\t") for line in (toy / "test.tsv").read_text().splitlines()[1:]]
    (tmp_path / "texts.txt").write_text("\n".join(text for text, _ in rows) + "\n")
    for checkpoint, out in ((workdir / "best", tmp_path / "best.jsonl"), (workdir, tmp_path / "run.jsonl")):
        predict(f"--checkpoint={checkpoint}", f"--input={tmp_path / 'texts.txt'}", f"--output={out}")
        predicted = [json.loads(line)["label"] for line in out.read_text().splitlines()]
        assert sum(p == label for p, (_, label) in zip(predicted, rows)) >= 0.9 * len(rows)
    too_long = finetune(
        workdir.with_name("long"), f"--config.init={folder}", "--config.task.max_seq_length=129", check=False
    )
    assert too_long.returncode != 0
    assert (
        "task.max_seq_length=129 exceeds the model's max_position_embeddings=130 less its position_offset=2"
        in too_long.stderr
    )


def test_roberta_pretrains_on_documents_with_a_bpe_tokenizer_and_exports(tmp_path, sample_files, bpe_folder):
    """configs/roberta.py:runlocal with a byte-level BPE tokenizer.json: masked LM on document runs
    (`<s> text </s>`, positions from row 2), exported by `to-hf` as a RobertaForMaskedLM folder
    whose tokenizer transformers reads, and whose logits on a tokenized text are bertjax's."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import numpy as np

    from bertjax.data.tokenizer import load_tokenizer
    from bertjax.model.bert import BertForPreTraining
    from bertjax.weights import param_tree, pretrained

    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        "--config=configs/roberta.py:runlocal",
        f"--workdir={workdir}",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={bpe_folder / 'tokenizer.json'}",
        "--config.data.max_documents=200",
        "--config.optim.learning_rate=3e-3",
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"] - 0.3, (train[0], train[-1])
    hf = tmp_path / "hf"
    done = subprocess.run(
        [sys.executable, "-m", "bertjax.convert", "to-hf", str(workdir), str(hf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((hf / "config.json").read_text())["model_type"] == "roberta"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf))
    text = "The central bank raised interest rates on Tuesday."
    expected = load_tokenizer(bpe_folder / "tokenizer.json").encode(text).ids
    assert tokenizer(text)["input_ids"] == expected and tokenizer.mask_token == "<mask>"
    model = transformers.RobertaForMaskedLM.from_pretrained(str(hf)).eval()
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor([expected])).logits.numpy()
    ours = pretrained.load(workdir)
    ids = np.asarray([expected], np.int32)
    params = {"params": param_tree.unflatten(ours.params)}
    positions = np.arange(ids.shape[1], dtype=np.int32)[None]
    logits = BertForPreTraining(ours.config).apply(params, ids, ids * 0, ids * 0 + 1, positions)[0]
    np.testing.assert_allclose(np.asarray(logits), theirs, atol=1e-4 * max(1.0, float(np.abs(theirs).max())))
