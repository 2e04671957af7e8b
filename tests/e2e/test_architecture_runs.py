"""Modern encoder architectures through the command-line runs: a ModernBERT folder fine-tunes."""

import json
import shutil

import pytest
from test_finetune import finetune, write_toy


def test_modernbert_folder_fine_tunes_from_its_encoder(tmp_path, vocab_file):
    """A Hugging Face ModernBERT folder (random weights, the sample WordPiece vocab) as
    `--config.init`: its encoder is loaded, rotary positions and sliding windows included, and the
    toy sentiment task is learned."""
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
    toy = write_toy(tmp_path / "toy")
    workdir = tmp_path / "run"
    finetune(
        workdir,
        f"--config.init={folder}",
        f"--config.task.train_file={toy / 'train.tsv'}",
        f"--config.task.test_file={toy / 'test.tsv'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.num_epochs=3",
        "--config.optim.learning_rate=1e-3",
    )
    results = json.loads((workdir / "results.json").read_text())
    assert results["load_report"]["loaded"] == ["encoder"]
    assert results["test"]["test"]["accuracy"] >= 0.9, results["test"]
