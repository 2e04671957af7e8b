"""Every paper recipe builds, has its paper's parameter count, and its sharded train step compiles
on an 8-device CPU mesh (FSDP) at a reduced batch, from abstract shapes.

Compiling all eight programs takes about 4 minutes on 2 CPU cores, too long for every `make test`:
by default two are compiled that between them cover both sizes, both lengths and both optimizers
(BERT-base phase 1 with AdamW at 128, LAMB BERT-large phase 2 at 512);
BERTJAX_ALL_RECIPES=1 (`make test-recipes`) compiles every one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMPILED = ["recipe=bert,size=base,phase=1", "recipe=lamb,phase=2"]


@pytest.fixture(scope="module")
def recipes():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    selected = [] if os.environ.get("BERTJAX_ALL_RECIPES") else DEFAULT_COMPILED
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "recipes_check.py"), *selected],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_parameter_counts_match_the_papers(recipes):
    # BERT-base ~110M and BERT-large ~340M (Devlin et al. 2018), heads included.
    for name, recipe in recipes.items():
        expected = {768: 110e6, 1024: 340e6}[recipe["hidden"]]
        assert abs(recipe["params"] - expected) / expected < 0.03, (name, recipe["params"])
    assert recipes["recipe=bert,size=large,phase=1"]["layers"] == 24


def test_phases_and_batches(recipes):
    assert recipes["recipe=bert,size=base,phase=1"]["seq_len"] == 128
    assert recipes["recipe=bert,size=base,phase=2"]["seq_len"] == 512
    assert (
        recipes["recipe=lamb,phase=1"]["batch_size"] == 65536 and recipes["recipe=lamb,phase=2"]["batch_size"] == 32768
    )
    assert recipes["recipe=lamb,phase=1"]["optimizer"] == "lamb"
    assert recipes["recipe=mosaic"]["batch_size"] == 4096


def test_train_steps_compile(recipes):
    assert len(recipes) == 8
    expected = recipes if os.environ.get("BERTJAX_ALL_RECIPES") else DEFAULT_COMPILED
    for name in expected:
        assert recipes[name]["compile_seconds"] > 0, name
