"""ELECTRA's replaced-token detection through `python -m bertjax.pretrain`: resume, export of both halves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pretrain_runs import pretrain_command, train_records

ROOT = Path(__file__).resolve().parents[2]
ELECTRA = (
    "--config.train.objective=electra",
    "--config.train.nsp_weight=0",
    "--config.train.generator_size=0.5",
    "--config.model.embedding_size=64",  # ELECTRA-small's factorised tables, under a hidden size of 128
    "--config.data.example_format=documents",
    "--config.data.mask_token_prob=0.85",
    "--config.data.random_token_prob=0.0",
    "--config.train.checkpoint_every_steps=4",
    "--config.optim.schedule_steps=8",  # one schedule, however many steps a run takes
    "--config.train.eval_every_steps=100",
)


def _run(workdir, tmp_path, sample_files, steps):
    command = pretrain_command(
        workdir, sample_files, tmp_path / "cache", *ELECTRA, f"--config.train.num_train_steps={steps}"
    )
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_electra_run_resumes_exactly_and_exports_both_halves(tmp_path, sample_files):
    """8 steps straight equal 4 steps, then 4 more resumed (the generator's samples are drawn from
    the step's key: the same after a resume); the run reports the generator's MLM and the
    discriminator's replaced-token metrics; `to-hf` writes the discriminator as an
    ElectraForPreTraining and the generator as an ElectraForMaskedLM, which transformers loads
    with no missing or unexpected keys and whose logits are bertjax's."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    straight = _run(tmp_path / "straight", tmp_path, sample_files, 8)
    _run(tmp_path / "resumed", tmp_path, sample_files, 4)
    _run(tmp_path / "resumed", tmp_path, sample_files, 8)
    first, second = train_records(tmp_path / "straight"), train_records(tmp_path / "resumed")
    assert [r["loss"] for r in first[4:]] == [r["loss"] for r in second if r["step"] > 4]
    final = json.loads((tmp_path / "straight" / "final_eval.json").read_text())
    assert 0 < final["replaced_fraction"] <= 0.2 and 0.5 < final["rtd_accuracy"] <= 1.0 and final["mlm_loss"] > 0
    assert "replaced-token accuracy" in straight.stdout

    out = tmp_path / "hf"
    command = [sys.executable, "-m", "bertjax.convert", "to-hf", str(tmp_path / "straight"), str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    from bertjax.model.electra import ElectraForPreTraining
    from bertjax.weights import param_tree, pretrained

    run = pretrained.load(tmp_path / "straight")
    model = ElectraForPreTraining(run.config, run.generator_config)
    params = param_tree.unflatten(run.params)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, run.config.vocab_size, (2, 20)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 14:] = 0
    positions = np.tile(np.arange(1, 20, 4, dtype=np.int32), (2, 1))
    ours = {
        "discriminator": np.asarray(model.apply({"params": params}, ids, ids * 0, mask, method="discriminate")),
        "generator": np.asarray(model.apply({"params": params}, ids, ids * 0, mask, positions, method="generate")),
    }
    for half, cls in (("discriminator", "ElectraForPreTraining"), ("generator", "ElectraForMaskedLM")):
        folder = out / half
        assert json.loads((folder / "config.json").read_text())["architectures"] == [cls]
        hf, info = getattr(transformers, cls).from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], (half, info)
        with torch.no_grad():
            logits = hf.eval()(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits
        logits = logits.numpy()
        if half == "generator":
            logits = np.take_along_axis(logits, positions[..., None], axis=1)
            np.testing.assert_allclose(ours[half], logits, atol=1e-4)
        else:
            real = mask > 0
            np.testing.assert_allclose(ours[half][real], logits[real], atol=1e-4)
