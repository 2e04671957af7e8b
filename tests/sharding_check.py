"""Run by tests/e2e/test_sharding.py in a fresh process with 8 simulated CPU devices (XLA_FLAGS must
be set before jax is imported). Trains a small BERT for a few steps on one device and on several
meshes with the same batches and keys, and prints one JSON line of what it measured."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from bertjax.config import MESH_PRESETS, MeshConfig, ModelConfig, OptimConfig  # noqa: E402
from bertjax.model.bert import BertForPreTraining  # noqa: E402
from bertjax.parallel import sharding  # noqa: E402
from bertjax.parallel.hlo import hlo_collectives  # noqa: E402
from bertjax.training import checkpoints, loop, optim, pretraining  # noqa: E402
from bertjax.training.state import abstract_sharded_state, create_sharded_state, init_state  # noqa: E402

MODEL = ModelConfig(
    # Large enough that GSPMD chose to gather lookups whole (Embeddings.word_table), and like BERT's
    # 30,522 not divisible by 4, so a tensor axis of 4 keeps the table whole along the vocabulary.
    vocab_size=2050,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=32,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
MODERNBERT_KNOBS = dict(
    position_embedding_type="rope",
    local_attention=8,
    global_attn_every_n_layers=2,
    mlp_type="glu",
    layer_norm_position="pre",
    first_attention_norm=False,
    type_vocab_size=0,
    norm_bias=False,
    attention_bias=False,
    mlp_bias=False,
    head_bias=False,
    attention_probs_dropout_prob=0.0,  # as ModernBERT's, and as splash attention needs
)
STEPS, BATCH, LENGTH, PREDICTIONS = 4, 16, 32, 5
MESHES = {
    # (devices, mesh, state initialised sharded on the mesh): one sharded init checks that the
    # sharded draw equals the one-device draw; the others place the one-device draw on their mesh.
    "single": ([0], MeshConfig(data=1), True),
    "dp": (None, MeshConfig(**MESH_PRESETS["dp"]), False),
    "fsdp": (None, MeshConfig(**MESH_PRESETS["fsdp"]), True),
    "data2_fsdp2_tensor2": (None, MeshConfig(data=2, fsdp=2, tensor=2), False),
    "data2_fsdp4": (None, MeshConfig(data=2, fsdp=4), False),
}


def batches() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(STEPS):
        lengths = rng.integers(LENGTH // 2, LENGTH + 1, BATCH)
        mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int32)
        out.append(
            {
                "input_ids": (rng.integers(5, MODEL.vocab_size, (BATCH, LENGTH)) * mask).astype(np.int32),
                "token_type_ids": (np.arange(LENGTH)[None] >= lengths[:, None] // 2).astype(np.int32) * mask,
                "attention_mask": mask,
                "masked_lm_positions": rng.integers(1, LENGTH // 2, (BATCH, PREDICTIONS)).astype(np.int32),
                "masked_lm_ids": rng.integers(5, MODEL.vocab_size, (BATCH, PREDICTIONS)).astype(np.int32),
                "masked_lm_weights": np.ones((BATCH, PREDICTIONS), np.float32),
                "next_sentence_labels": rng.integers(0, 2, BATCH).astype(np.int32),
            }
        )
    return out


def bytes_per_device(tree: object) -> tuple[int, int]:
    """(total bytes, bytes on device 0) of a pytree of global arrays."""
    total = on_first = 0
    first = jax.devices()[0]
    for leaf in jax.tree.leaves(tree):
        total += leaf.size * leaf.dtype.itemsize
        on_first += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == first)
    return total, on_first


@functools.cache
def drawn_state(model_config: ModelConfig, optimizer: str) -> object:
    """The initial state (key 0) on the host, drawn on one device."""
    tx, _ = optim.make_optimizer(OptimConfig(optimizer=optimizer, learning_rate=1e-3, warmup_steps=1), 100)
    init = pretraining.param_init(BertForPreTraining(model_config), LENGTH)
    return jax.device_get(nn.meta.unbox(init_state(jax.random.key(0), init, tx)))


def run(
    devices: list[int] | None,
    mesh_config: MeshConfig,
    model_config: ModelConfig = MODEL,
    optimizer: str = "adamw",
    born_sharded: bool = False,
) -> dict[str, object]:
    """Trains STEPS steps on the mesh. `born_sharded`: the state is initialised sharded on the mesh
    (as runs do), else the host copy of the one-device draw is placed on it."""
    devs = [jax.devices()[i] for i in devices] if devices else jax.devices()
    mesh = sharding.make_mesh(mesh_config, devs)
    model = BertForPreTraining(model_config)
    tx, schedule = optim.make_optimizer(OptimConfig(optimizer=optimizer, learning_rate=1e-3, warmup_steps=1), 100)
    init = pretraining.param_init(model, LENGTH)
    if born_sharded:
        state, shardings = create_sharded_state(jax.random.key(0), init, tx, mesh, mesh_config)
    else:  # the same values, drawn once on one device and placed on this mesh (one init compile less)
        _, shardings = abstract_sharded_state(jax.random.key(0), init, tx, mesh, mesh_config)
        state = jax.device_put(drawn_state(model_config, optimizer), shardings)
    steps = pretraining.compile_steps(model, tx, schedule, shardings, mesh, 1)
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
        for batch in batches():
            state, metrics = steps.train(state, loop.to_global(batch, steps.batch_sharding), jax.random.key(1))
            losses.append(float(metrics["loss"]))
    if len(devs) > 1:
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
            batch = loop.to_global(batches()[0], steps.batch_sharding)
            hlo = steps.train.lower(state, batch, jax.random.key(1)).compile().as_text()
        # All-gathers whose result holds a float [BATCH, LENGTH, ...] array: the global batch's
        # activations on every device.
        gathers = [c.result for c in hlo_collectives(hlo) if c.kind == "all-gather"]
        extra = {"global_batch_gathers": sum(f"f32[{BATCH},{LENGTH}," in result for result in gathers)}
    else:
        extra = {}
    total, first = bytes_per_device((state.params, state.opt_state))
    layers = state.params["bert"]
    kernel = (layers["layers"] if model_config.scan_layers else layers["layer_0"])["intermediate"]["kernel"]
    word_table = state.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    return {
        "losses": losses,
        "params": jax.tree.map(lambda x: np.asarray(jax.device_get(x)), state.params),
        "state_bytes": total,
        "state_bytes_device0": first,
        "kernel_shard_shape": list(kernel.addressable_shards[0].data.shape),
        "kernel_shape": list(kernel.shape),
        "word_table_shard_shape": list(word_table.addressable_shards[0].data.shape),
        "compilations": steps.train._cache_size(),
        "mesh_shape": dict(mesh.shape),
        **extra,
    }


def restore_across_meshes(directory: str) -> dict[str, float]:
    """Saves an FSDP-8 state, restores it on 4 devices (data parallel) and on 1: max differences."""
    model = BertForPreTraining(MODEL)
    tx, _ = optim.make_optimizer(OptimConfig(learning_rate=1e-3, warmup_steps=1), 100)

    def target_on(devices: list, mesh_config: MeshConfig) -> tuple[object, object]:
        """The state's abstract shapes and shardings on the mesh, as a run restores into them."""
        mesh = sharding.make_mesh(mesh_config, devices)
        return abstract_sharded_state(jax.random.key(7), pretraining.param_init(model, LENGTH), tx, mesh, mesh_config)

    _, fsdp_shardings = target_on(jax.devices(), MeshConfig(**MESH_PRESETS["fsdp"]))
    saved = jax.device_put(drawn_state(MODEL, "adamw"), fsdp_shardings)
    saved = saved.replace(params=jax.tree.map(lambda x: x * 1.5 + 0.25, saved.params))  # not the init values
    manager = checkpoints.manager(directory, 2)
    checkpoints.save(manager, 1, saved, {"step": 1})
    manager.wait_until_finished()
    expected = jax.device_get(saved)
    out = {}
    for name, devices, mesh_config in (
        ("dp4", jax.devices()[:4], MeshConfig(**MESH_PRESETS["dp"])),
        ("single", jax.devices()[:1], MeshConfig(data=1)),
    ):
        target, _ = target_on(devices, mesh_config)
        restored, progress, _ = checkpoints.restore_latest(manager, target)
        leaf = restored.params["bert"]["layer_0"]["intermediate"]["kernel"]
        diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), restored, expected))
        out[name] = {
            "max_diff": max(diffs),
            "devices": len(leaf.sharding.device_set),
            "step": progress["step"],
            "replicated": leaf.addressable_shards[0].data.shape == leaf.shape,
        }
    manager.close()
    return out


def base_state_memory() -> dict[str, float]:
    """MiB per device of BERT-base's parameters + AdamW state under each preset (abstract shapes)."""
    base = ModelConfig(vocab_size=30522)  # L12 H768, fp32
    model = BertForPreTraining(base)
    tx, _ = optim.make_optimizer(OptimConfig(), 100)
    init = functools.partial(init_state, init_params=pretraining.param_init(model, 128), tx=tx)
    boxed = jax.eval_shape(init, jax.random.key(0))
    abstract = nn.meta.unbox(boxed)
    out = {}
    for preset in ("dp", "fsdp", "fsdp_tp"):
        mesh_config = MeshConfig(**MESH_PRESETS[preset])
        shardings = sharding.state_shardings(boxed, sharding.make_mesh(mesh_config), mesh_config)
        out[preset] = (
            sharding.bytes_per_device((abstract.params, abstract.opt_state), (shardings.params, shardings.opt_state))
            / 2**20
        )
    return out


def main() -> None:
    assert len(jax.devices()) == 8, jax.devices()
    results = {name: run(devices, config, born_sharded=born) for name, (devices, config, born) in MESHES.items()}
    # LAMB, whose trust ratios take norms of whole parameters (split here up to 8 ways; per layer of
    # the stacked parameters of a scanned encoder), with jax.nn.dot_product_attention
    # (model.attention="xla", no attention dropout), its heads split 4 ways over the tensor axis,
    # which does not divide the vocabulary, and ALiBi's per-head bias split with them.
    variant = dataclasses.replace(
        MODEL, attention="xla", attention_probs_dropout_prob=0.0, scan_layers=True, position_embedding_type="alibi"
    )
    results["single_xla_lamb"] = run([0], MeshConfig(data=1), variant, optimizer="lamb", born_sharded=True)
    results["fsdp2_tensor4_xla_lamb"] = run(None, MeshConfig(data=1, fsdp=2, tensor=4), variant, optimizer="lamb")
    # ModernBERT's knobs: rotary positions, sliding windows of 8 of the 32 tokens on all but every
    # other layer, a GeGLU whose kernel [embed, 2, mlp] splits over the tensor axis, pre-LN without
    # biases or token types; on the mesh with splash attention (interpreted here; per device
    # through shard_map, the batch over data x fsdp and the heads over tensor), against bertjax's
    # own attention on one device.
    modern = dataclasses.replace(MODEL, **MODERNBERT_KNOBS)
    results["single_modernbert"] = run([0], MeshConfig(data=1), modern)
    splash = dataclasses.replace(modern, attention="splash")
    results["data2_fsdp2_tensor2_modernbert"] = run(None, MeshConfig(data=2, fsdp=2, tensor=2), splash)
    report = {}
    for name, result in results.items():
        reference = results["single"]["params"]
        if name.endswith("xla_lamb"):
            reference = results["single_xla_lamb"]["params"]
        if name.endswith("modernbert"):
            reference = results["single_modernbert"]["params"]
        diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), result["params"], reference))
        report[name] = {**{k: v for k, v in result.items() if k != "params"}, "max_param_diff": max(diffs)}
    with tempfile.TemporaryDirectory() as directory:
        report["restore"] = restore_across_meshes(directory)
    report["base_state_mib_per_device"] = base_state_memory()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
