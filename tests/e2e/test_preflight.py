"""`python -m bertjax.preflight`: a run's steps compiled for a topology from abstract state, its
memory per device against the chip's, XLA's cost, and what to change when it does not fit."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_qa_and_ner import write_ner, write_squad

from bertjax.errors import ConfigError
from bertjax.training import preflight

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


def _preflight(tmp_path, *args, env=None):
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "bertjax.preflight", *args, f"--json={report}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env or os.environ)
    return result, (json.loads(report.read_text()) if report.is_file() else None)


def test_topology_names_give_the_slices_chips_and_shape():
    assert preflight.parse_topology("v5p-256").shape == (4, 4, 8) and preflight.parse_topology("v5p-256").devices == 128
    assert preflight.parse_topology("v4-8").shape == (2, 2, 1)
    assert preflight.parse_topology("v5e-16").shape == (4, 4) and preflight.parse_topology("v6e-256").shape == (16, 16)
    assert preflight.parse_topology("cpu-8").devices == 8 and preflight.parse_topology("cpu-8").chip is None
    for bad in ("v5p-12", "v7-8", "tpu"):
        with pytest.raises(ConfigError, match="--topology"):
            preflight.parse_topology(bad)


def test_a_compile_refused_for_hbm_is_read_as_does_not_fit():
    message = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
        "(169.33G) exceeds available HBM (15.75G)."
    )
    refused = preflight.out_of_memory(message)
    assert refused["temporaries"] == 169.33 * 2**30 and refused["executable"] is None
    assert preflight.out_of_memory("INTERNAL: something else") is None


def test_bert_base_state_per_device_matches_the_sharding_check(tmp_path):
    """BERT-base's parameters + AdamW state per device on 8 CPU devices: 1,260 MiB replicated (dp)
    and 158 MiB under FSDP, as the sharding check measures them (README, Scaling out); the step
    compiles and XLA's FLOPs per device agree with the model's count (within 25%: XLA counts the
    optimizer and norms too)."""
    for preset, expected in (("dp", 1260), ("fsdp", 158)):
        result, report = _preflight(
            tmp_path,
            "--config=configs/pretrain.py:size=base",
            "--topology=cpu-8",
            f"--config.mesh.preset={preset}",
            "--config.train.batch_size=8",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        state = (report["parameters"] + report["optimizer_state"]) / MIB
        assert abs(state - expected) < 1.0, (preset, state)
        assert report["temporaries"] > 0 and report["total"] > report["parameters"] + report["optimizer_state"]
        assert 0.75 < report["flops"] / report["model_flops"] < 1.25, (report["flops"], report["model_flops"])
        assert "FITS" in result.stdout and report["devices"] == 8
    assert "all-gather" in report["collectives"]  # FSDP gathers the parameters


def test_a_run_that_does_not_fit_exits_1_and_suggest_finds_a_change(tmp_path):
    """The compiled step is written for the launch to reuse; one byte less memory than it needs is
    DOES NOT FIT, exit 1 and one line on stderr, and --suggest names a change under which it fits."""
    args = ["--config=configs/pretrain.py:runlocal", "--topology=cpu-8", "--config.mesh.preset=dp"]
    result, report = _preflight(tmp_path, *args, f"--save_executable={tmp_path / 'step.bin'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "step.bin").stat().st_size > 10_000  # the serialised compiled train step
    # Held-out batches of their own size: the eval step's memory follows them, the train step's does not.
    result, big_eval = _preflight(tmp_path, *args, "--config.train.eval_batch_size=32")
    assert result.returncode == 0 and big_eval["eval_batch"] == 32 > report["eval_batch"], result.stderr[-2000:]
    assert big_eval["eval_total"] > report["eval_total"] and big_eval["total"] == report["total"]
    result, _ = _preflight(tmp_path, *args, "--config.train.eval_batch_size=4")
    assert result.returncode == 2 and "eval_batch_size=4 does not split over the 8" in result.stderr
    tight = (report["total"] - 1) / 2**30  # one byte short for the step as configured
    result, _ = _preflight(tmp_path, *args, f"--hbm_gib={tight}", "--suggest")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: does not fit"), result.stderr
    assert "DOES NOT FIT" in result.stdout and "fits with " in result.stdout, result.stdout


@pytest.mark.parametrize("task", ["ner", "squad"])
def test_fine_tuning_configs_compile_with_their_heads(tmp_path, vocab_file, task):
    """A fine-tuning config's train and predict steps compile from its data's shapes: the
    parameters per device are those of transformers' torch model of the same shape (a token or a
    span head), four bytes each, and AdamW's two moments twice that; replicated under dp, split 8
    ways under FSDP (`python -m bertjax.preflight --config=configs/squad.py ...`)."""
    import transformers

    from bertjax import config as config_lib

    data = (write_ner if task == "ner" else write_squad)(tmp_path / "data")
    files = {"ner": ("train.txt", "valid.txt"), "squad": ("train.json", "dev.json")}[task]
    args = [
        f"--config=configs/{task}.py:runlocal",
        "--topology=cpu-8",
        f"--config.task.train_file={data / files[0]}",
        f"--config.task.dev_file={data / files[1]}",
        "--config.task.test_file=",
        f"--config.task.vocab_file={vocab_file}",
        "--config.train.eval_batch_size=16",
    ]
    size = config_lib.model_config_from_dict({"size": "tiny"})
    tags = {line.split()[-1] for line in (data / files[0]).read_text().splitlines() if line.strip()}
    hf_config = transformers.BertConfig(
        vocab_size=sum(1 for _ in open(vocab_file, encoding="utf-8")),
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        intermediate_size=size.intermediate_size,
        max_position_embeddings=size.max_position_embeddings,
        num_labels=len(tags) if task == "ner" else 2,
    )
    torch_model = (transformers.BertForTokenClassification if task == "ner" else transformers.BertForQuestionAnswering)(
        hf_config
    )
    expected = 4 * sum(p.numel() for p in torch_model.parameters())
    for preset, share in (("dp", 1), ("fsdp", 8)):
        result, report = _preflight(tmp_path, *args, f"--config.mesh.preset={preset}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "FITS" in result.stdout and report["eval_batch"] == 16
        # Under FSDP the small vectors (biases, LayerNorm) that do not split stay whole: within 1%.
        tolerance = 1024 if share == 1 else 0.01 * expected / share
        assert abs(report["parameters"] - expected / share) < tolerance, (preset, report["parameters"], expected)
        assert abs(report["optimizer_state"] - 2 * expected / share) < 2 * tolerance, (
            preset,
            report["optimizer_state"],
        )
        assert report["flops"] > 0 and report["temporaries"] > 0 and report["train_steps"] > 0
    # Fine-tuning batches change width from batch to batch: no single compiled step to hand a launch.
    result, _ = _preflight(tmp_path, *args, f"--save_executable={tmp_path / 'step.bin'}")
    assert result.returncode == 2 and "--save_executable: fine-tuning batches" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "step.bin").exists()


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="no libtpu: pip install -e '.[tpu]'")
def test_a_small_tpu_topology_compiles_on_this_host(tmp_path):
    result, report = _preflight(
        tmp_path,
        "--config=configs/pretrain.py:runlocal",
        "--topology=v5e-4",
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["devices"] == 4 and report["hbm"] == 16 * 2**30 and report["estimate"]["step_s"] > 0
    assert "FITS" in result.stdout and "on v5e-4 (4 devices" in result.stdout


def test_a_saved_train_step_runs_the_launch_as_its_own_compile_would(tmp_path, sample_files):
    """A pretraining run on 8 devices given the step preflight compiled for cpu-8
    (train.compiled_step_file) logs the losses of the run that compiles its own, to 1e-6 (the
    same program compiled in two processes: the two traces hand XLA their private functions
    deduplicated differently, and its optimised programs then round a few sums differently); a
    file compiled for another batch or learning rate is refused in one line, exit 2."""
    common = [
        "--config=configs/pretrain.py:runlocal",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
        "--config.data.max_documents=300",
        "--config.mesh.preset=fsdp",
        "--config.train.num_train_steps=6",
    ]
    step_file = tmp_path / "step.bin"
    result, _ = _preflight(tmp_path, *common, "--topology=cpu-8", f"--save_executable={step_file}")
    assert result.returncode == 0, result.stderr[-3000:]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}

    def pretrain(workdir, *extra):
        command = [sys.executable, "-m", "bertjax.pretrain", *common, f"--workdir={workdir}"]
        command += ["--config.train.log_every_steps=1", *extra]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)

    def losses(workdir):
        records = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
        return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]

    own, ahead = tmp_path / "own", tmp_path / "ahead"
    assert pretrain(own).returncode == 0
    result = pretrain(ahead, f"--config.train.compiled_step_file={step_file}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiled ahead of time" in result.stdout
    assert len(losses(ahead)) == 6 and [s for s, _ in losses(ahead)] == [s for s, _ in losses(own)]
    np.testing.assert_allclose([x for _, x in losses(ahead)], [x for _, x in losses(own)], rtol=1e-6, atol=0)
    for other in ("--config.train.batch_size=16", "--config.optim.learning_rate=1e-3"):
        result = pretrain(tmp_path / other[-4:], f"--config.train.compiled_step_file={step_file}", other)
        assert result.returncode == 2 and "compiled from another train step" in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().count("\n") == 0
