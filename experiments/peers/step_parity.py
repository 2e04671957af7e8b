"""bertjax and transformers' torch model from the same start on the same batches: step by step.

    python experiments/peers/step_parity.py --config=configs/demo_qa.py --steps=25 --dropout=0
    python experiments/peers/step_parity.py --config=configs/demo_qa.py --steps=60

Builds the bertjax run of a fine-tuning config and the peer of `torch_finetune.py` from the
parameters that run starts from (the checkpoint's encoder and bertjax's fresh head), then trains
both on the run's first batches with the config's optimizer and schedule, printing each step's
train loss, gradient norm and learning rate side by side. bertjax's span loss is taken over the
whole window here (`task.answer_positions="window"`, as the HF class takes it). With `--dropout=0`
the two should agree to float32 rounding (the only other difference: bertjax's span and tag
losses leave the padding out of the softmax); with dropout they differ by their dropout draws,
and their means over many steps should agree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import torch
import torch_finetune as peer

from bertjax import config as config_lib
from bertjax.parallel import sharding
from bertjax.training import finetuning, loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a bertjax fine-tuning config file (file.py[:arg])")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--dropout", type=float, default=None, help="both models' dropout (default: the config's)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    values = peer.config_values(args.config)
    values.task.answer_positions = "window"  # the span softmax over the window's tokens, as the HF class's
    if args.dropout is not None:
        values.model.hidden_dropout_prob = values.model.attention_probs_dropout_prob = args.dropout
    cfg = config_lib.finetune_config_from_dict(values)
    run_setup = finetuning.setup(cfg)
    run, state, _ = finetuning.build(cfg, run_setup, Path(tempfile.mkdtemp()))
    data, train_cfg, optim_cfg = run_setup.data, cfg.train, cfg.optim
    kind = peer.kind_of(run_setup)
    model_config = run_setup.model_config
    model = peer.hf_model(
        kind,
        run_setup.task,
        cfg.init,
        hidden_dropout_prob=model_config.hidden_dropout_prob,
        attention_probs_dropout_prob=model_config.attention_probs_dropout_prob,
    )
    model.load_state_dict(peer.bertjax_start(cfg, run_setup), strict=True)
    model.train()
    optimizer, schedule = peer.optimizer_and_schedule(model, optim_cfg, run.total_steps)
    order = finetuning.epoch_order(
        data.train.features["attention_mask"].sum(1), train_cfg.batch_size, train_cfg.seed, 0, train_cfg.group_by_length
    )
    print("step | bertjax loss, grad norm, lr | torch loss, grad norm, lr")
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(sharding.rules(cfg.mesh)):
        for step in range(min(args.steps, run.steps_per_epoch)):
            rows = order[step * train_cfg.batch_size : (step + 1) * train_cfg.batch_size]
            batch = finetuning.batch_of(data.train, rows, len(rows), run.widths)
            state, metrics = run.train_step(state, loop.to_global(batch, run.batch_sharding), run.dropout_rng)
            lr = schedule.get_last_lr()[0]
            inputs = peer.model_inputs(peer.padded_batch(data.train.features, rows), kind, train=True)
            loss, norm = peer.torch_step(model, optimizer, inputs, optim_cfg.clip_norm, cfg.model.dtype)
            schedule.step()
            print(
                f"{step} | {float(metrics['loss']):.5f}, {float(metrics['grad_norm']):.4f}, "
                f"{float(metrics['learning_rate']):.3e} | {loss.item():.5f}, {norm.item():.4f}, {lr:.3e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
