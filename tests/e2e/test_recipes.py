"""Every paper recipe builds, has its paper's parameter count, and its sharded train step compiles
on an 8-device CPU mesh (FSDP) at a reduced batch, from abstract shapes.

Compiling every program at full depth takes about 4 minutes on 2 CPU cores, too long for
every `make test`: by default two are compiled that between them cover both sizes, both lengths
and both optimizers (BERT-base phase 1 with AdamW at 128, LAMB BERT-large phase 2 at 512), with
their encoders cut to 2 layers (each layer is the same program; 24 of them only take longer to
compile: 59 s against 22 s here). BERTJAX_ALL_RECIPES=1 (`make test-recipes`) compiles every one
at full depth.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertjax import config as config_lib
from bertjax.training import optim

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_COMPILED = ["recipe=bert,size=base,phase=1", "recipe=lamb,phase=2"]


@pytest.fixture(scope="module")
def recipes():
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    selected = [] if os.environ.get("BERTJAX_ALL_RECIPES") else DEFAULT_COMPILED
    env["BERTJAX_RECIPE_LAYERS"] = "0" if os.environ.get("BERTJAX_ALL_RECIPES") else "2"
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
        if not name.startswith("recipe=") or name in ("recipe=mosaic", "recipe=cramming"):
            continue
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
    assert (
        recipes["recipe=academic"]["layer_norm"] == "pre"
        and recipes["recipe=bert,size=base,phase=1"]["layer_norm"] == "post"
    )


def test_architectures_have_the_published_models_parameter_counts(recipes):
    """ModernBERT-base and RoBERTa-base as transformers counts them (149,655,232; 124,697,433),
    ELECTRA-base's generator as transformers' ElectraForMaskedLM of its shape, each plus the
    pooler and NSP head every bertjax pretraining model carries."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    def pooler_and_nsp(hidden):
        return hidden * hidden + hidden + 2 * hidden + 2

    shape = dict(embedding_size=768, hidden_size=256, num_attention_heads=4, intermediate_size=1024)
    with torch.device("meta"):
        generator = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**shape))
    electra = sum(p.numel() for p in generator.parameters())
    assert recipes["modernbert-base"]["params"] == 149_655_232 + pooler_and_nsp(768)
    assert recipes["roberta-base"]["params"] == 124_697_433 + pooler_and_nsp(768)
    assert recipes["electra-base-generator"]["params"] == electra + pooler_and_nsp(256)
    assert recipes["modernbert-base"]["layers"] == 22 and recipes["roberta-base"]["seq_len"] == 512


def test_newer_recipes_have_their_papers_sizes(recipes):
    """MosaicBERT-base 137M (Portes et al. 2023; bertjax's GLU input bias and pooler/NSP head add
    ~0.8%); ELECTRA-small 14M and -base 110M discriminators (Clark et al. 2020, Table 1 and 8);
    crammed BERT's 16 layers (its paper gives no count: 119.0M by bertjax's formula, tested
    against transformers elsewhere); NeoBERT 250M (Le Breton et al. 2025; bertjax counts 245.6M
    with the pooler and NSP head); ModernBERT and the budget recipes' optimizers."""
    assert abs(recipes["recipe=mosaic"]["params"] - 137e6) / 137e6 < 0.01
    assert abs(recipes["electra-small"]["params"] - 14e6) / 14e6 < 0.05
    assert abs(recipes["electra-base"]["params"] - 110e6) / 110e6 < 0.01
    assert recipes["electra-base"]["objective"] == "electra" and recipes["electra-small"]["seq_len"] == 128
    assert recipes["recipe=cramming"]["layers"] == 16 and recipes["recipe=cramming"]["time_budget_hours"] == 24
    assert recipes["recipe=academic"]["time_budget_hours"] == 24
    assert abs(recipes["neobert"]["params"] - 250e6) / 250e6 < 0.03 and recipes["neobert"]["layers"] == 28
    assert recipes["modernbert-base"]["optimizer"] == "stable_adamw" and recipes["modernbert-base"]["seq_len"] == 1024


def test_train_steps_compile(recipes):
    assert len([name for name in recipes if name.startswith("recipe=")]) == 9 and len(recipes) == 15
    expected = recipes if os.environ.get("BERTJAX_ALL_RECIPES") else DEFAULT_COMPILED
    for name in expected:
        assert recipes[name]["compile_seconds"] > 0, name


def test_bert_phases_follow_one_learning_rate_schedule():
    """Phase 1 (900k steps) and phase 2 (100k) run google-research/bert's single schedule: 10k
    warmup steps to 1e-4, then linear decay to 0 at step 1M (its decay runs from step 0, ours from
    the warmup's end as in Hugging Face's schedule: within 1.1%). Phase 2 starts near 1e-5, not
    at a fresh peak."""
    recipes = config_lib.load_config_module(ROOT / "experiments" / "recipes.py")

    def schedule(phase):
        config_dict = recipes.get_config(f"recipe=bert,phase={phase}")
        config_dict.init = "runs/phase1" if phase == 2 else ""
        config = config_lib.from_config_dict(config_dict)
        assert config.init_optimizer == (phase == 2)  # phase 2 goes on with phase 1's Adam moments
        assert config.init_optimizer_count == "continue"  # and their count (one run in google's)
        assert not config.optim.bias_correction  # google's AdamWeightDecayOptimizer
        return optim.make_optimizer(config.optim, config.train.num_train_steps)[1], config.train.num_train_steps

    def google(step):  # optimization.py: polynomial_decay(1e-4, step, 1M, power=1), then the warmup
        return 1e-4 * step / 10_000 if step < 10_000 else 1e-4 * (1 - step / 1_000_000)

    first, first_steps = schedule(1)
    second, second_steps = schedule(2)
    assert (first_steps, second_steps) == (900_000, 100_000)
    for step in (0, 5_000, 10_000, 400_000, 899_999):
        assert abs(float(first(step)) - google(step)) <= 0.011 * google(step) + 1e-12, step
    for step in (0, 50_000, 99_000):
        assert abs(float(second(step)) - google(900_000 + step)) <= 0.011 * google(900_000 + step), step
    assert abs(float(second(0)) - 1.01e-5) < 1e-8 and float(second(100_000)) == 0.0


def test_schedule_span_errors_are_one_line_config_errors():
    recipes = config_lib.load_config_module(ROOT / "experiments" / "recipes.py")
    config = recipes.get_config("recipe=bert,phase=2")
    with pytest.raises(config_lib.ConfigError, match="init_optimizer=True needs init"):
        config_lib.from_config_dict(config)  # phase 2 without --config.init=<phase 1's run>
    config.init = "runs/phase1"
    config.train.num_train_steps = 100_001
    with pytest.raises(config_lib.ConfigError, match="go past optim.schedule_steps=1000000"):
        config_lib.from_config_dict(config)
    config.optim.schedule_steps = 0
    with pytest.raises(config_lib.ConfigError, match="schedule_offset needs optim.schedule_steps"):
        config_lib.from_config_dict(config)


def test_mosaic_recipe_is_mosaics_yaml():
    """mosaicml/examples' mosaic-bert-base-uncased.yaml in bertjax's terms: Composer's decoupled
    weight decay 1e-5 (weights x (1 - 1e-5 lr_t / lr_peak) per step) is optax's 1e-5 / 5e-4 on
    every parameter; linear decay to 2% of the peak; no clipping; no attention dropout."""
    recipes = config_lib.load_config_module(ROOT / "experiments" / "recipes.py")
    config = config_lib.from_config_dict(recipes.get_config("recipe=mosaic"))
    assert abs(config.optim.weight_decay * config.optim.learning_rate - 1e-5) < 1e-12
    assert config.optim.exclude_from_weight_decay == () and config.optim.clip_norm == 0.0
    assert config.model.attention_probs_dropout_prob == 0.0 and config.data.masked_lm_prob == 0.3
    _, schedule = optim.make_optimizer(config.optim, config.train.num_train_steps)
    assert (config.train.num_train_steps, config.train.batch_size) == (70_000, 4096)  # 286,720,000 samples
    assert abs(float(schedule(70_000)) - 0.02 * 5e-4) < 1e-10 and abs(float(schedule(4_200)) - 5e-4) < 1e-10


def test_lamb_phase_2_restarts_the_moments_count_as_nvidia():
    """NVIDIA's LAMB phase 2 loads phase 1's optimizer state and sets its step count back to 0; a
    restart without init_optimizer, or another word, is a one-line config error."""
    recipes = config_lib.load_config_module(ROOT / "experiments" / "recipes.py")
    config_dict = recipes.get_config("recipe=lamb,phase=2")
    config_dict.init = "runs/phase1"
    config = config_lib.from_config_dict(config_dict)
    assert config.init_optimizer and config.init_optimizer_count == "restart"
    config_dict.init_optimizer = False
    with pytest.raises(config_lib.ConfigError, match="init_optimizer_count='restart' needs init_optimizer=True"):
        config_lib.from_config_dict(config_dict)
    config_dict.init_optimizer, config_dict.init_optimizer_count = True, "reset"
    with pytest.raises(config_lib.ConfigError, match="init_optimizer_count='reset': expected one of continue"):
        config_lib.from_config_dict(config_dict)


# Each recipe's `runlocal` variant: its architecture and objective at a tiny size, trained through
# `python -m bertjax.pretrain` on the sample corpus. make test trains Cramming's (a time budget,
# scaled sinusoidal positions, a gated feed-forward, no biases); make test-recipes trains them all.
RUNLOCAL = {
    "cramming": "experiments/recipes.py:recipe=cramming,runlocal",
    "mosaic": "experiments/recipes.py:recipe=mosaic,runlocal",
    "academic": "experiments/recipes.py:recipe=academic,runlocal",
    "bert": "experiments/recipes.py:recipe=bert,runlocal",
    "lamb": "experiments/recipes.py:recipe=lamb,runlocal",
    "electra": "configs/electra.py:runlocal",
    "modernbert": "configs/modernbert.py:runlocal",
    "roberta": "configs/roberta.py:runlocal",
    "neobert": "configs/neobert.py:runlocal",
}


@pytest.mark.parametrize("name", list(RUNLOCAL))
def test_runlocal_variant_trains_on_the_sample_corpus(name, sample_files, tmp_path):
    if name != "cramming" and not os.environ.get("BERTJAX_ALL_RECIPES"):
        pytest.skip("make test-recipes trains every recipe's runlocal variant")
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        f"--config={RUNLOCAL[name]}",
        f"--workdir={workdir}",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
        "--config.data.max_documents=200",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((workdir / "final_eval.json").read_text())
    assert final["mlm_accuracy"] > 0 and np.isfinite(final["loss"]), final
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["learning_rate"] for r in records if r["split"] == "train"]
    assert rates and all(np.isfinite(rates)) and max(rates) > 0
