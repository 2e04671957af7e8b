"""bertjax's train step beside transformers' torch step on the same rows, at chosen batch widths.

    python experiments/peers/step_times.py --config=configs/demo_ner.py --widths=16,32,64

For each width, a batch of `train.batch_size` train rows at least that long (the shortest such),
cut to its longest row as both systems cut it; each system takes `--warmup` steps (bertjax
compiles then) and the mean of the next `--steps` is printed. Same model, head, optimizer and
dropout as the config's run and `torch_finetune.py`'s peer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import torch
import torch_finetune as peer

from bertjax import config as config_lib
from bertjax.parallel import sharding
from bertjax.training import finetuning, loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a bertjax fine-tuning config file (file.py[:arg])")
    parser.add_argument("--widths", default="16,32,64")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = config_lib.finetune_config_from_dict(peer.config_values(args.config))
    run_setup = finetuning.setup(cfg)
    run, state, _ = finetuning.build(cfg, run_setup, Path(tempfile.mkdtemp()))
    features, size = run_setup.data.train.features, cfg.train.batch_size
    lengths = features["attention_mask"].sum(1)
    order = np.argsort(lengths, kind="stable")
    kind = peer.kind_of(run_setup)
    model = peer.hf_model(kind, run_setup.task, cfg.init)
    model.load_state_dict(peer.bertjax_start(cfg, run_setup), strict=True)
    model.train()
    optimizer, _ = peer.optimizer_and_schedule(model, cfg.optim, run.total_steps)
    exact = finetuning.batch_widths(np.zeros(0), 1, run_setup.data.train.features["input_ids"].shape[1])  # every width
    print("width | bertjax step (s) | torch step (s)")
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(sharding.rules(cfg.mesh)):
        for width in (int(w) for w in args.widths.split(",")):
            rows = order[np.searchsorted(lengths[order], width) :][:size]
            batch = loop.to_global(finetuning.batch_of(run_setup.data.train, rows, size, exact), run.batch_sharding)
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    jax.block_until_ready(state)
                    began = time.perf_counter()
                state, metrics = run.train_step(state, batch, run.dropout_rng)
            jax.block_until_ready(metrics)
            ours = (time.perf_counter() - began) / args.steps
            inputs = peer.model_inputs(peer.padded_batch(features, rows), kind, train=True)
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    began = time.perf_counter()
                peer.torch_step(model, optimizer, inputs, cfg.optim.clip_norm, cfg.model.dtype)
            theirs = (time.perf_counter() - began) / args.steps
            print(f"{inputs['input_ids'].shape[1]} | {ours:.3f} | {theirs:.3f}", flush=True)


if __name__ == "__main__":
    main()
