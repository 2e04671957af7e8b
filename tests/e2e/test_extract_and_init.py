"""Feature extraction against torch BertModel; GLUE through TFDS; pretraining from HF weights."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertjax.errors import DataError
from bertjax.tasks import glue

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tfds = pytest.importorskip("tensorflow_datasets")
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _tiny_hf(folder: Path, vocab_file: Path, cls=None) -> tuple:
    torch.manual_seed(1)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = (cls or transformers.BertModel)(config).eval()
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text(vocab_file.read_text())
    return model, folder


def test_extract_equals_torch_bert_model_in_input_order(tmp_path, vocab_file):
    model, folder = _tiny_hf(tmp_path / "hf", vocab_file)
    texts = ["The cat sat on the mat.", "A pair of texts ||| the second one here", "", "Short", "x " * 100]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "features.npz"
    command = [sys.executable, "-m", "bertjax.extract", f"--checkpoint={folder}", f"--input={tmp_path / 'in.txt'}"]
    command += [f"--output={out}", "--max_seq_length=32", "--batch_size=2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    features = np.load(out)
    assert features["last_hidden_state"].shape == (5, 32, 32) and features["pooled_output"].shape == (5, 32)
    tokenizer = transformers.BertTokenizerFast(str(folder / "vocab.txt"))
    for i, text in enumerate(texts):
        args = [part.strip() for part in text.split("|||")] if "|||" in text else [text]
        encoded = tokenizer(*args, truncation=True, max_length=32, return_tensors="pt")
        n = encoded["input_ids"].shape[1]
        assert features["input_ids"][i, :n].tolist() == encoded["input_ids"][0].tolist()
        assert features["attention_mask"][i].sum() == n
        with torch.no_grad():
            reference = model(**encoded)
        np.testing.assert_allclose(
            features["last_hidden_state"][i, :n], reference.last_hidden_state[0].numpy(), atol=1e-5
        )
        np.testing.assert_allclose(features["pooled_output"][i], reference.pooler_output[0].numpy(), atol=1e-5)

    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\n")
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bertjax.extract",
            f"--checkpoint={folder}",
            f"--input={tmp_path / 'bad.txt'}",
            f"--output={tmp_path / 'x.npz'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert bad.returncode == 2 and "bad.txt line 2 is not UTF-8" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_glue_through_tfds_on_a_local_builder(tmp_path):
    """The TFDS path of the GLUE reader, on a builder with glue/rte's features prepared locally."""
    rows = [
        ("A man sleeps.", "Someone rests.", 0),
        ("It rains.", "The sun is out.", 1),
        ("Dogs bark.", "Animals make noise.", 0),
    ]

    class LocalGlueRte(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "sentence1": tfds.features.Text(),
                    "sentence2": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["entailment", "not_entailment"]),
                    "idx": tfds.features.Scalar(dtype=np.int32),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(rows, labelled=True),
                "test": self._generate_examples(rows, labelled=False),
            }

        def _generate_examples(self, items, labelled):
            for i, (a, b, y) in enumerate(items):
                yield i, {"sentence1": a, "sentence2": b, "label": y if labelled else -1, "idx": i}

    LocalGlueRte(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    task = dataclasses.replace(glue.get_task("rte"), tfds_name="local_glue_rte")
    train = glue.read_split(task, "train", tfds_data_dir=str(tmp_path))
    assert train.labels.tolist() == [0, 1, 0] and train.text_b[1] == "The sun is out." and train.ids == ["0", "1", "2"]
    test = glue.read_split(task, "test", tfds_data_dir=str(tmp_path))
    assert test.labels is None and test.text_a[2] == "Dogs bark."
    with pytest.raises(DataError, match="cannot be read"):
        glue.read_split(task, "dev", tfds_data_dir=str(tmp_path))  # no validation split


def test_pretraining_starts_from_hugging_face_weights(tmp_path, sample_files):
    model, folder = _tiny_hf(tmp_path / "hf", sample_files["vocab"], cls=transformers.BertForPreTraining)
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        "--config=configs/pretrain.py:runlocal",
        f"--workdir={workdir}",
    ]
    command += [f"--config.init={folder}", "--config.data.max_documents=100", "--config.train.num_train_steps=2"]
    command += [
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
    ]
    command += ["--config.optim.learning_rate=0"]  # the weights stay those of the checkpoint
    # A scanned encoder takes the per-layer weights stacked, and its checkpoint reads back per layer.
    command += ["--config.model.scan_layers=True"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "init from" in result.stdout and "initialised fresh" not in result.stdout
    assert json.loads((workdir / "config.json").read_text())["config"]["model"]["hidden_size"] == 32
    from bertjax.weights import pretrained

    saved = pretrained.load(workdir)
    np.testing.assert_allclose(
        saved.params["mlm_head/transform/kernel"],
        model.state_dict()["cls.predictions.transform.dense.weight"].numpy().T,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        saved.params["bert/layer_1/intermediate/kernel"],
        model.state_dict()["bert.encoder.layer.1.intermediate.dense.weight"].numpy().T,
        atol=1e-7,
    )
    assert not any(k.startswith("bert/layers/") for k in saved.params)


def _optimizer_counts(workdir: Path, step: int) -> list[int]:
    """The step counters in a pretraining checkpoint's optimizer state (Adam's and the schedule's)."""
    import jax

    from bertjax.weights import pretrained

    state = pretrained._restore_tree(workdir / "checkpoints" / str(step) / "state")
    leaves = jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
    return sorted(int(v) for path, v in leaves if "count" in jax.tree_util.keystr(path))


def test_second_phase_takes_the_first_phases_optimizer_state(tmp_path, sample_files):
    """init + init_optimizer=True: the second run starts at step 0 with the first run's Adam
    moments (google-research/bert's phase 2 continued its optimizer, NVIDIA's LAMB phase 2 loads
    it) and its own learning-rate schedule. Asking it of
    another optimizer, or without init, is a one-line error."""
    common = [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        "--config=configs/pretrain.py:runlocal",
        "--config.data.max_documents=100",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
        "--config.train.checkpoint_every_steps=1000",
    ]

    def run(workdir, *extra):
        return subprocess.run(
            [*common, f"--workdir={workdir}", *extra], cwd=ROOT, capture_output=True, text=True, env=ENV
        )

    first = tmp_path / "phase1"
    assert run(first, "--config.train.num_train_steps=4").returncode == 0
    assert _optimizer_counts(first, 4) == [4, 4]
    second = tmp_path / "phase2"
    result = run(second, f"--config.init={first}", "--config.init_optimizer=True", "--config.train.num_train_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "optimizer state from" in result.stdout
    # Adam's count goes on (4 of phase 1 + 2; a fresh optimizer counts 2); the schedule's is this run's.
    assert _optimizer_counts(second, 2) == [2, 6]

    lamb = run(
        tmp_path / "lamb", f"--config.init={first}", "--config.init_optimizer=True", "--config.optim.optimizer=lamb"
    )
    assert lamb.returncode == 2 and "optimizer state" in lamb.stderr.strip().splitlines()[-1], lamb.stderr[-2000:]
    assert not (tmp_path / "lamb" / "checkpoints").exists()  # the failed start leaves no empty directory
    no_init = run(tmp_path / "none", "--config.init_optimizer=True")
    assert no_init.returncode == 2 and "init_optimizer=True needs init" in no_init.stderr
