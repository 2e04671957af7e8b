"""A packed pretraining run: pairs counted in evaluation, exact resume."""


def test_packed_pretraining_runs_evaluates_pairs_and_resumes_exactly(tmp_path, sample_files):
    import json
    import os
    import subprocess
    from pathlib import Path

    from pretrain_runs import pretrain_command, train_records

    root = Path(__file__).resolve().parents[2]
    packed = (
        "--config.data.pack_examples=3",
        "--config.data.short_seq_prob=1.0",
        "--config.data.max_seq_length=128",
        "--config.optim.grad_accum_steps=2",
        "--config.train.eval_every_steps=100",
        "--config.train.checkpoint_every_steps=6",
    )

    def run(workdir, steps):
        command = pretrain_command(
            workdir, sample_files, tmp_path / "cache", *packed, f"--config.train.num_train_steps={steps}"
        )
        result = subprocess.run(
            command, cwd=root, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
        )
        assert result.returncode == 0, result.stderr[-3000:]

    run(tmp_path / "straight", 12)
    run(tmp_path / "resumed", 6)
    run(tmp_path / "resumed", 12)
    straight, resumed = train_records(tmp_path / "straight"), train_records(tmp_path / "resumed")
    assert [r["loss"] for r in straight[6:]] == [r["loss"] for r in resumed if r["step"] > 6]
    final = json.loads((tmp_path / "straight" / "final_eval.json").read_text())
    # The held-out metrics count pairs, and packed rows hold more than one: 2 batches of 8 rows.
    assert final["examples"] > 16 and 0 < final["mlm_loss"] < 20
