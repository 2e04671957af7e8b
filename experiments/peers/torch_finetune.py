"""The peer for bertjax's fine-tuning demos: transformers' torch models on the same data.

    python experiments/peers/torch_finetune.py --config=configs/demo_ner.py --out=runs/ner-peer.json
    python experiments/peers/torch_finetune.py --config=configs/demo_qa.py --out=runs/qa-peer.json

Reads the same config file as `bertjax.finetune` and lets bertjax's task read and encode the data
(the same sentences, windows and labels), then trains Hugging Face's torch
`BertForTokenClassification` / `BertForQuestionAnswering` / `BertForSequenceClassification` from
the same checkpoint the way transformers' `run_ner` / `run_qa` / `run_glue` examples (their
Trainer) do: AdamW without decay on biases and LayerNorm weights, linear warmup and decay, gradient
clipping at 1.0, dropout, batches padded to their longest row, the loss of the HF model class; with
a config that computes in bfloat16 (`configs/demo_qa.py:bf16`), forward passes under CPU autocast
to bfloat16, as the Trainer's `--bf16` runs them. The learning rate, batch size, epochs, warmup
share, weight decay and Adam settings are the config's; the batches are bertjax's (`epoch_order`:
the same rows in the same order, grouped by length when `train.group_by_length` is set, as the
Trainer's `group_by_length` does; `--group-by-length` sets it for the peer alone: a bertjax run
that packs its batches (`task.packing`) trains in random order, while the peer is fastest grouped).
The eval and test splits are scored with bertjax's task (the official metric definitions), after
each epoch and at the end; the wall time covers the same span as bertjax's run (model load to the
last prediction).

The fresh head (the span or tag classifier) starts from the values bertjax draws for
`train.seed` (`--no-same-head`: transformers' own draw), so that the two runs of one config
differ only in their dropout draws and arithmetic, and on SQuAD in the span loss: the HF class
takes its softmax over every position of the padded window, bertjax over the context's tokens and
[CLS] (`task.answer_positions`). Making those tensors is not counted in the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import torch
import transformers

from bertjax import config as config_lib
from bertjax import tasks
from bertjax.parallel import sharding
from bertjax.tasks.base import Split
from bertjax.training import finetuning, optim
from bertjax.training import state as state_lib
from bertjax.weights import hf_mapping

IGNORE_INDEX = -100  # what torch's cross-entropy (and so HF's token classifier) skips


def config_values(spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of a config file named as `bertjax.finetune` takes it (`file.py[:arg]`)."""
    path, _, arg = spec.partition(":")
    return config_lib.load_config_module(path).get_config(arg or None)


def compute_context(dtype: str) -> contextlib.AbstractContextManager:
    """Where the model runs: under CPU autocast to bfloat16 when the config computes in bfloat16
    (as the Trainer's `--bf16` runs forward passes; parameters and optimizer stay float32)."""
    if dtype == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def torch_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: dict[str, torch.Tensor],
    clip_norm: float,
    dtype: str = "float32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Trainer update: the loss (the forward pass in `dtype`), its gradient clipped to
    `clip_norm`, the optimizer step. Returns (loss, gradient norm before clipping)."""
    with compute_context(dtype):
        loss = model(**inputs).loss
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    optimizer.zero_grad()
    return loss, norm


def kind_of(run_setup: finetuning.Setup) -> str:
    """qa, tagging, regression or classification: which HF model class and loss."""
    if "start_positions" in run_setup.data.train.features:
        return "qa"
    if run_setup.task.per_token:
        return "tagging"
    return "regression" if not run_setup.task.labels else "classification"


def optimizer_and_schedule(
    model: torch.nn.Module, optim_cfg: config_lib.OptimConfig, total: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The Trainer's AdamW (no decay on biases and LayerNorm weights) and linear warmup and decay."""
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": optim_cfg.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=optim_cfg.learning_rate, betas=(optim_cfg.b1, optim_cfg.b2), eps=optim_cfg.eps
    )
    warmup = optim_cfg.warmup_steps or round(optim_cfg.warmup_fraction * total)
    return optimizer, transformers.get_linear_schedule_with_warmup(optimizer, warmup, total)


def hf_model(kind: str, task: tasks.Task, init: str, **config: Any) -> torch.nn.Module:
    """The HF model class for `kind` from the checkpoint `init` (`config`: overrides of its config)."""
    if kind == "qa":
        return transformers.BertForQuestionAnswering.from_pretrained(init, **config)
    if kind == "tagging":
        return transformers.BertForTokenClassification.from_pretrained(init, num_labels=len(task.labels), **config)
    labels = max(1, len(task.labels))
    return transformers.BertForSequenceClassification.from_pretrained(init, num_labels=labels, **config)


def bertjax_start(cfg: config_lib.FinetuneConfig, run_setup: finetuning.Setup) -> dict[str, torch.Tensor]:
    """The parameters a bertjax run of this config starts from, as Hugging Face tensors: the
    checkpoint's encoder and the head bertjax draws with `train.seed`."""
    model = run_setup.task.model(run_setup.model_config)
    tx, _ = optim.make_optimizer(cfg.optim, 1)
    init = finetuning.param_init(run_setup.task, model, cfg.task.max_seq_length)
    init_rng, _ = state_lib.run_keys(cfg.train.seed)
    mesh = sharding.make_mesh(cfg.mesh)
    abstract, _ = state_lib.abstract_sharded_state(init_rng, init, tx, mesh, cfg.mesh)
    start, _ = state_lib.init_from_checkpoint(
        init_rng, init, abstract, run_setup.checkpoint, tx, mesh, cfg.mesh, verbose=False
    )
    tensors = hf_mapping.params_to_hf(jax.device_get(start.params), run_setup.model_config)
    return {name: torch.from_numpy(np.array(value)) for name, value in tensors.items()}


def padded_batch(features: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Rows padded to their longest (as transformers' data collators do)."""
    length = int(features["attention_mask"][rows].sum(1).max())
    out = {}
    for key, value in features.items():
        v = value[rows]
        if v.ndim == 2:
            v = v[:, :length]
        out[key] = torch.from_numpy(np.ascontiguousarray(v))
    return out


def model_inputs(batch: dict[str, torch.Tensor], kind: str, train: bool) -> dict[str, torch.Tensor]:
    inputs = {k: batch[k].long() for k in ("input_ids", "token_type_ids", "attention_mask")}
    if not train:
        return inputs
    if kind == "qa":
        inputs["start_positions"] = batch["start_positions"].long()
        inputs["end_positions"] = batch["end_positions"].long()
    elif kind == "tagging":
        labels = batch["labels"].long()
        inputs["labels"] = torch.where(labels < 0, IGNORE_INDEX, labels)
    else:
        inputs["labels"] = batch["labels"] if kind == "regression" else batch["labels"].long()
    return inputs


def _outputs(model: torch.nn.Module, split: Split, kind: str, batch_size: int, dtype: str) -> np.ndarray:
    model.eval()
    length = split.features["input_ids"].shape[1]
    outs = []
    with torch.no_grad(), compute_context(dtype):
        for start in range(0, len(split), batch_size):
            rows = np.arange(start, min(start + batch_size, len(split)))
            out = model(**model_inputs(padded_batch(split.features, rows), kind, train=False))
            if kind == "qa":
                logits = torch.stack([out.start_logits, out.end_logits], -1).float().numpy()
            else:
                logits = out.logits.float().numpy()
            if logits.ndim == 3 and logits.shape[1] < length:
                logits = np.pad(logits, [(0, 0), (0, length - logits.shape[1]), (0, 0)])
            outs.append(logits)
    model.train()
    return np.concatenate(outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a bertjax fine-tuning config file (file.py[:arg])")
    parser.add_argument("--out", required=True, help="where the results JSON goes")
    parser.add_argument(
        "--same-head",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the fresh head from bertjax's draw for train.seed (default), not transformers' own",
    )
    parser.add_argument(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batches of rows of similar length (default: the config's train.group_by_length)",
    )
    parser.add_argument("--seed", type=int, default=None, help="train.seed (default: the config's)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = config_lib.finetune_config_from_dict(config_values(args.config))
    if args.group_by_length is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, group_by_length=args.group_by_length))
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=args.seed))
    train_cfg, optim_cfg = cfg.train, cfg.optim
    torch.manual_seed(train_cfg.seed)
    began = time.time()
    run_setup = finetuning.setup(cfg)  # bertjax's checkpoint, tokenizer and encoded splits
    task, data = run_setup.task, run_setup.data
    kind = kind_of(run_setup)
    model_config = run_setup.model_config
    model = hf_model(  # the config's dropout, as the bertjax run uses it
        kind,
        task,
        cfg.init,
        hidden_dropout_prob=model_config.hidden_dropout_prob,
        attention_probs_dropout_prob=model_config.attention_probs_dropout_prob,
    )
    if args.same_head:
        drawn = time.time()
        model.load_state_dict(bertjax_start(cfg, run_setup), strict=True)
        began += time.time() - drawn  # bertjax's part, not the peer's
    model.train()
    steps_per_epoch = len(data.train) // train_cfg.batch_size
    total = max(1, round(train_cfg.num_epochs * steps_per_epoch))
    optimizer, schedule = optimizer_and_schedule(model, optim_cfg, total)
    lengths = data.train.features["attention_mask"].sum(1)
    epochs, order, loss_sum = [], np.arange(0), 0.0
    print(f"{kind}: {len(data.train)} train rows, {total} steps of {train_cfg.batch_size}", flush=True)
    for step in range(total):
        epoch, row = divmod(step * train_cfg.batch_size, steps_per_epoch * train_cfg.batch_size)
        if row == 0:
            order = finetuning.epoch_order(
                lengths, train_cfg.batch_size, train_cfg.seed, epoch, train_cfg.group_by_length
            )
        rows = order[row : row + train_cfg.batch_size]
        inputs = model_inputs(padded_batch(data.train.features, rows), kind, train=True)
        loss, _ = torch_step(model, optimizer, inputs, optim_cfg.clip_norm, cfg.model.dtype)
        schedule.step()
        loss_sum += float(loss)
        if (step + 1) % train_cfg.log_every_steps == 0:
            print(
                f"step {step + 1}/{total}: loss {loss_sum / train_cfg.log_every_steps:.4f} ({time.time() - began:.0f} s)",
                flush=True,
            )
            loss_sum = 0.0
        if (step + 1) % steps_per_epoch == 0 or step + 1 == total:
            record = {"epoch": round((step + 1) / steps_per_epoch, 3)}
            for name, split in data.evals.items():
                record[name] = task.evaluate(
                    split, _outputs(model, split, kind, train_cfg.eval_batch_size, cfg.model.dtype)
                )
            epochs.append(record)
            print(json.dumps(record), flush=True)
    test = {}
    for name, split in data.tests.items():
        if split.labelled:
            test[name] = task.evaluate(split, _outputs(model, split, kind, train_cfg.eval_batch_size, cfg.model.dtype))
    results = {
        "peer": f"transformers {transformers.__version__} / torch {torch.__version__}, {torch.get_num_threads()} threads",
        "config": args.config,
        "seed": train_cfg.seed,
        "group_by_length": train_cfg.group_by_length,
        "epochs": epochs,
        "test": test,
        "wall_seconds": round(time.time() - began, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({"test": test, "wall_seconds": results["wall_seconds"]}))


if __name__ == "__main__":
    main()
