"""python -m bertjax.convert from-hf / to-hf, and its one-line errors."""

import subprocess
import sys
from pathlib import Path

import transformers
from test_pretrained import _random_hf

ROOT = Path(__file__).resolve().parents[2]


def test_convert_command_line(tmp_path):
    _, folder = _random_hf(transformers.BertForPreTraining, tmp_path, "hf")

    def convert(*args):
        return subprocess.run(
            [sys.executable, "-m", "bertjax.convert", *map(str, args)], cwd=ROOT, capture_output=True, text=True
        )

    done = convert("from-hf", folder, tmp_path / "ours")
    assert done.returncode == 0, done.stderr
    assert "encoder, mlm_head, nsp_head, pooler" in done.stdout
    assert convert("to-hf", tmp_path / "ours", tmp_path / "back").returncode == 0
    failed = convert("from-hf", tmp_path / "nowhere", tmp_path / "x")
    assert failed.returncode == 2 and failed.stderr.startswith("error: ") and len(failed.stderr.splitlines()) == 1
    assert not (tmp_path / "x").exists()
