"""bertjax's and transformers' torch gradients under dropout, from the same parameters on one batch.

    python experiments/peers/dropout_gradients.py --config=configs/demo_qa.py --init=runs/qa/best --draws=24

Loads the parameters a run of the config would start from (`--init`: a trained bertjax model,
e.g. a run's best/) into both systems, takes one training batch (`--batch`, in the order of
`train.seed`), and prints the norms of the deterministic gradients and of the gradients averaged
over `--draws` dropout draws, their difference across the systems, and the difference between
the two halves of each system's draws (the Monte Carlo noise to judge the former by); then
cosines for a few tensors.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch_finetune as peer

from bertjax import config as config_lib
from bertjax.training import finetuning
from bertjax.weights import hf_mapping

TENSORS = (
    "qa_outputs.weight",
    "bert.encoder.layer.5.output.dense.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.embeddings.word_embeddings.weight",
)


def _mean(grads: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: sum(g[k] for g in grads) / len(grads) for k in grads[0]}


def _norm(grads: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float((v**2).sum()) for v in grads.values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a bertjax fine-tuning config file (file.py[:arg])")
    parser.add_argument("--init", default="", help="parameters to start from (default: the config's init)")
    parser.add_argument("--draws", type=int, default=24)
    parser.add_argument("--batch", type=int, default=100, help="which batch of the first epoch")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    values = peer.config_values(args.config)
    encoder = values.init
    if args.init:
        values.init = args.init
    cfg = config_lib.finetune_config_from_dict(values)
    run_setup = finetuning.setup(cfg)
    _, state, _ = finetuning.build(cfg, run_setup, Path(tempfile.mkdtemp()))
    data, task, batch_size = run_setup.data, run_setup.task, cfg.train.batch_size
    kind = peer.kind_of(run_setup)
    model = peer.hf_model(kind, task, encoder)
    model.load_state_dict(peer.bertjax_start(cfg, run_setup), strict=True)
    jax_model = task.model(run_setup.model_config)
    lengths = data.train.features["attention_mask"].sum(1)
    order = finetuning.epoch_order(lengths, batch_size, cfg.train.seed, 0, cfg.train.group_by_length)
    rows = order[args.batch * batch_size : (args.batch + 1) * batch_size]
    batch = {k: jnp.asarray(v) for k, v in finetuning.batch_of(data.train, rows, len(rows)).items()}
    denominator = task.denominator(batch)

    def loss(params: Any, rng: jax.Array | None) -> jax.Array:
        return task.loss(params, batch, rng, denominator, model=jax_model)[0]

    def as_hf(tree: Any) -> dict[str, np.ndarray]:
        tensors = hf_mapping.params_to_hf(jax.device_get(tree), run_setup.model_config)
        return {k: np.asarray(v) for k, v in tensors.items()}

    grad = jax.jit(jax.grad(loss))
    inputs = peer.model_inputs(peer.padded_batch(data.train.features, rows), kind, train=True)

    def torch_grad(train: bool) -> dict[str, np.ndarray]:
        model.train(train)
        model.zero_grad()
        model(**inputs).loss.backward()
        return {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters() if p.grad is not None}

    jax_det, torch_det = as_hf(grad(state.params, None)), torch_grad(False)
    jax_draws = [as_hf(grad(state.params, jax.random.key(100 + i))) for i in range(args.draws)]
    torch_draws = [torch_grad(True) for _ in range(args.draws)]
    keys = [k for k in torch_det if k in jax_det]

    def diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
        return _norm({k: a[k] - b[k] for k in keys})

    half = args.draws // 2
    jax_mean, torch_mean = _mean(jax_draws), _mean(torch_draws)
    print(f"batch {args.batch} ({inputs['input_ids'].shape[1]} tokens), {len(keys)} tensors, {args.draws} draws")
    print(
        f"no dropout: |bertjax| {_norm(jax_det):.3f}, |torch| {_norm(torch_det):.3f}, |difference| {diff(jax_det, torch_det):.3f}"
    )
    print(
        f"dropout mean: |bertjax| {_norm(jax_mean):.3f}, |torch| {_norm(torch_mean):.3f}, "
        f"|difference| {diff(jax_mean, torch_mean):.3f}"
    )
    jax_a, jax_b = _mean(jax_draws[:half]), _mean(jax_draws[half:])
    torch_a, torch_b = _mean(torch_draws[:half]), _mean(torch_draws[half:])
    print(
        f"halves of {half} draws: within bertjax {diff(jax_a, jax_b):.3f}, within torch {diff(torch_a, torch_b):.3f}, "
        f"across {diff(jax_a, torch_a):.3f} and {diff(jax_b, torch_b):.3f}"
    )
    for k in TENSORS:
        if k in keys:
            a, b = jax_mean[k], torch_mean[k]
            cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
            det = float((jax_det[k] * torch_det[k]).sum() / np.linalg.norm(jax_det[k]) / np.linalg.norm(torch_det[k]))
            print(f"{k}: cosine of the dropout means {cos:.3f} (without dropout {det:.4f})")


if __name__ == "__main__":
    main()
