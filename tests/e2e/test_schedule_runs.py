"""Pretraining runs whose schedules are not one of steps alone, in this process: a wall-clock budget
(train.time_budget_hours) with a clock that ticks a fixed 360 s per reading (the schedule follows
the elapsed share of the budget, the run ends when the budget is spent), and a batch-size warmup
(train.batch_size_phases); each stopped and resumed ends bitwise equal to a run that never stopped."""

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bertjax import config as config_lib
from bertjax.training import pretraining

ROOT = Path(__file__).resolve().parents[2]
TICK = 360.0  # seconds per clock reading: 10 steps fill a budget of one hour


class TickingClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += TICK
        return self.now


def _config(sample_files, cache: Path, steps: int, **train: object) -> config_lib.PretrainConfig:
    cd = config_lib.load_config_module(ROOT / "configs" / "pretrain.py").get_config("runlocal")
    cd.data.train_files = str(sample_files["news"])
    cd.data.vocab_file = str(sample_files["vocab"])
    cd.data.max_documents = 100
    cd.data.cache_dir = str(cache)
    cd.model.num_hidden_layers = 1
    cd.train.log_every_steps = 1
    cd.train.eval_every_steps = 100
    cd.train.checkpoint_every_steps = 100
    cd.train.time_budget_hours = 1.0
    cd.train.num_train_steps = steps  # an upper bound; the budget ends the run at step 10
    cd.optim.schedule_steps = 40  # the schedule's length, whatever the run's steps
    cd.optim.warmup_steps = 0
    cd.optim.warmup_fraction = 0.5  # Cramming's triangle: up over half the budget, down over the rest
    cd.optim.learning_rate = 1e-3
    cd.train.update(train)
    return config_lib.from_config_dict(cd)


def _final_params(workdir: Path):
    manager = ocp.CheckpointManager(workdir / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, jax.tree.leaves(restored["state"]["params"])


@pytest.mark.slow
def test_budget_run_follows_the_elapsed_share_and_resumes_exactly(sample_files, tmp_path):
    straight = tmp_path / "straight"
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 40), straight, clock=TickingClock())
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    rates = [r["learning_rate"] for r in records if r.get("split") == "train"]
    # Step s starts at s x 360 s of the 3600 s budget: schedule position 40 s / 10, a triangle
    # peaking at position 20 (the budget's half).
    expected = [1e-3 * (p / 20 if p < 20 else 1 - (p - 20) / 20) for p in (4.0 * s for s in range(10))]
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-9)
    step, params = _final_params(straight)
    assert step == 10  # the budget, not the 40 steps, ended the run
    assert (straight / "final_eval.json").exists()

    resumed = tmp_path / "resumed"
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 6), resumed, clock=TickingClock())
    assert _final_params(resumed)[0] == 6
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 40), resumed, clock=TickingClock())
    step_again, params_again = _final_params(resumed)
    assert step_again == 10
    for a, b in zip(params, params_again, strict=True):
        np.testing.assert_array_equal(a, b)
    # A run whose budget is spent trains no more: it evaluates what it has.
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 40), resumed, clock=TickingClock())
    assert _final_params(resumed)[0] == 10


@pytest.mark.slow
def test_batch_size_warmup_run_resumes_exactly(sample_files, tmp_path):
    """Batches of 4, then 8, then 16 rows (three compiled shapes): 8 steps straight equal 4 steps,
    stop, 4 more resumed; the checkpoint records the rows read (4 x 3 + 8 = 20 after 4 steps)."""
    warmup = dict(time_budget_hours=0.0, batch_size=16, batch_size_phases="0:4,3:8,5:16")
    straight = tmp_path / "straight"
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 8, **warmup), straight)
    resumed = tmp_path / "resumed"
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 4, **warmup), resumed)
    progress = json.loads((resumed / "checkpoints" / "4" / "progress" / "metadata").read_text())
    assert progress["examples_seen"] == 20
    pretraining.pretrain(_config(sample_files, tmp_path / "cache", 8, **warmup), resumed)
    (step, params), (step_again, params_again) = _final_params(straight), _final_params(resumed)
    assert step == step_again == 8
    for a, b in zip(params, params_again, strict=True):
        np.testing.assert_array_equal(a, b)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    seen = [r for r in records if r.get("split") == "train"]
    assert len(seen) == 8
