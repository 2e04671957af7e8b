"""Run by tests/e2e/test_recipes.py with 8 simulated CPU devices: every paper recipe's config builds,
and the train steps of the recipes named on the command line (all when none is) lower and compile
on the 8-device mesh (FSDP, as the launch scripts run it) for a reduced batch of 8 sequences, from
abstract shapes only (no parameter is materialised); so do the modern architectures at full size
(ARCHITECTURES: ModernBERT-base, RoBERTa-base, NeoBERT, ELECTRA-small and -base and ELECTRA-base's
generator)
with their objectives' steps. Prints one JSON line: per recipe or architecture, its parameter count, sequence length and
compile seconds (None when not compiled)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

from bertjax import config as config_lib  # noqa: E402
from bertjax.training import preflight  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [
    "recipe=bert,size=base,phase=1",
    "recipe=bert,size=base,phase=2",
    "recipe=bert,size=large,phase=1",
    "recipe=bert,size=large,phase=2",
    "recipe=lamb,phase=1",
    "recipe=lamb,phase=2",
    "recipe=academic",
    "recipe=mosaic",
    "recipe=cramming",
]
# Modern encoder architectures at full size, compiled with their own objective: config file,
# argument, and fields set on top (ELECTRA-base's generator alone: 256 wide under 768-wide
# embeddings, as a masked LM; ELECTRA-small and -base: replaced-token detection, both halves).
ARCHITECTURES = {
    "modernbert-base": ("configs/modernbert.py", "size=base", {}),
    "roberta-base": ("configs/roberta.py", "size=base", {}),
    "neobert": ("configs/neobert.py", "", {}),
    "electra-small": ("configs/electra.py", "size=small", {}),
    "electra-base": ("configs/electra.py", "size=base", {}),
    "electra-base-generator": (
        "configs/pretrain.py",
        "size=base",
        dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024, embedding_size=768),
    ),
}
BATCH = 8


def compile_step(config: config_lib.PretrainConfig, layers: int) -> float:
    """Seconds to lower and compile the sharded train and eval steps for BATCH sequences (packed
    rows where the recipe packs), with the recipe's encoder cut to `layers` layers (0: all of
    them): what `bertjax.preflight` compiles, here on the 8 CPU devices."""
    model_config = dataclasses.replace(config.model, vocab_size=config.model.vocab_size or 30522)
    if layers:
        model_config = dataclasses.replace(model_config, num_hidden_layers=layers)
    mesh_config = dataclasses.replace(config.mesh, **config_lib.MESH_PRESETS["fsdp"])
    train_config = dataclasses.replace(config.train, batch_size=BATCH, batch_size_phases="")
    optim_config = dataclasses.replace(config.optim, grad_accum_steps=1)
    config = dataclasses.replace(config, model=model_config, mesh=mesh_config, train=train_config, optim=optim_config)
    start = time.perf_counter()
    preflight.compile_steps(config, jax.devices())
    return time.perf_counter() - start


def main() -> None:
    assert len(jax.devices()) == 8
    recipes_file = ROOT / "experiments" / "recipes.py"
    module = config_lib.load_config_module(recipes_file)
    report = {}
    # Which recipes' steps to compile (every recipe is built), and at how many layers (0: all).
    layers = int(os.environ.get("BERTJAX_RECIPE_LAYERS", "0"))
    to_compile = sys.argv[1:] or [*RECIPES, *ARCHITECTURES]
    compiled: dict[tuple, float] = {}
    for arg in RECIPES:
        config_dict = module.get_config(arg)
        if "phase=2" in arg:  # run with --config.init=<phase 1's run directory>
            config_dict.init = "runs/phase1"
        config = config_lib.from_config_dict(config_dict)
        model = dataclasses.replace(config.model, vocab_size=30522)
        key = (
            model.hidden_size,
            model.num_hidden_layers,
            config.data.max_seq_length,
            config.data.max_predictions_per_seq,
            config.optim.optimizer,
            config.train.nsp_weight,
            config.model.layer_norm_position,
            config.model.position_embedding_type,
            config.model.mlp_type,
            config.train.time_budget_hours,
        )
        if arg in to_compile and key not in compiled:  # the same program compiles once
            compiled[key] = compile_step(config, layers)
        report[arg] = {
            "params": model.num_params(),
            "layers": model.num_hidden_layers,
            "hidden": model.hidden_size,
            "seq_len": config.data.max_seq_length,
            "batch_size": config.train.batch_size,
            "optimizer": config.optim.optimizer,
            "layer_norm": config.model.layer_norm_position,
            "time_budget_hours": config.train.time_budget_hours,
            "compile_seconds": round(compiled[key], 1) if key in compiled else None,
        }
    for name, (path, arg, fields) in ARCHITECTURES.items():
        config_dict = config_lib.load_config_module(ROOT / path).get_config(arg)
        config_dict.model.update(fields)
        config = config_lib.from_config_dict(config_dict)
        model = dataclasses.replace(config.model, vocab_size=config.model.vocab_size or 30522)
        seconds = compile_step(config, layers) if name in to_compile else None
        report[name] = {
            "params": model.num_params(),
            "layers": model.num_hidden_layers,
            "hidden": model.hidden_size,
            "seq_len": config.data.max_seq_length,
            "optimizer": config.optim.optimizer,
            "objective": config.train.objective,
            "compile_seconds": round(seconds, 1) if seconds is not None else None,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
