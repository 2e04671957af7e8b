"""`python -m bertjax.preflight`: a run's steps compiled for a topology from abstract state, its
memory per device against the chip's, XLA's cost, and what to change when it does not fit."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    tight = (report["total"] - 1) / 2**30  # one byte short for the step as configured
    result, _ = _preflight(tmp_path, *args, f"--hbm_gib={tight}", "--suggest")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: does not fit"), result.stderr
    assert "DOES NOT FIT" in result.stdout and "fits with " in result.stdout, result.stdout


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
