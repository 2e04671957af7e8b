"""What bertjax's compiled pretraining step moves between devices, per mesh: the bytes of each kind
of collective in the compiled HLO (per device, summed over the step), XLA's scratch memory plan,
and how many all-gathers hold a [global batch, length, ...] array. Compiled from abstract shapes
on simulated CPU devices; nothing runs.

    python -m benchmarks.sharded_collectives [--size=base] [--layers=2] [--batch=64] [--length=128]
                                              [--meshes=8,1,1 1,8,1 2,2,2 1,4,2] [--top=0] [--scan-layers]

A mesh is data,fsdp,tensor. The CPU backend keeps FSDP's gradient reductions as all-reduce (GPU and
TPU compilers turn all-reduce + slice into reduce-scatter), so compare meshes and code versions
with each other, not with a GPU's traffic.
"""

from __future__ import annotations

import argparse
import collections
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (fewer compile faster)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--meshes", nargs="+", default=["8,1,1", "1,8,1", "2,2,2", "1,4,2"])
    parser.add_argument("--top", type=int, default=0, help="also list the largest collectives")
    parser.add_argument("--scan-layers", action="store_true", help="model.scan_layers=True")
    args = parser.parse_args()
    meshes = [tuple(int(n) for n in mesh.split(",")) for mesh in args.meshes]
    devices = max(d * f * t for d, f, t in meshes)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import dataclasses

    import flax.linen as nn
    import jax

    from benchmarks import bench
    from bertjax.config import MeshConfig, OptimConfig
    from bertjax.model.bert import BertForPreTraining
    from bertjax.parallel import sharding
    from bertjax.parallel.hlo import hlo_collectives
    from bertjax.training import optim, pretraining
    from bertjax.training.state import init_state

    config = bench.bench_model_config(args.size, "float32", "einsum")
    config = dataclasses.replace(config, num_hidden_layers=args.layers, scan_layers=args.scan_layers)
    model = BertForPreTraining(config)
    tx, schedule = optim.make_optimizer(OptimConfig(learning_rate=1e-4, warmup_steps=10), 1000)
    data = bench._random_batch(args.batch, args.length)
    batch = {k: jax.ShapeDtypeStruct(data[k].shape, data[k].dtype) for k in pretraining.BATCH_KEYS}
    abstract = jax.eval_shape(
        lambda key: init_state(key, pretraining.param_init(model, args.length), tx), jax.random.key(0)
    )
    abstract_state = nn.meta.unbox(abstract)
    kinds = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")
    scanned = ", scanned" if args.scan_layers else ""
    print(f"{args.size} ({args.layers} layers{scanned}), batch {args.batch} x {args.length}, float32; MiB per device")
    print("| data,fsdp,tensor | " + " | ".join(kinds) + " | scratch | global-batch all-gathers |")
    print("|---" * (len(kinds) + 3) + "|")
    for d, f, t in meshes:
        mesh_config = MeshConfig(data=d, fsdp=f, tensor=t)
        mesh = sharding.make_mesh(mesh_config, jax.devices()[: d * f * t])
        shardings = sharding.state_shardings(abstract, mesh, mesh_config)
        step = pretraining.compile_steps(model, tx, schedule, shardings, mesh, 1).train
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
            compiled = step.lower(abstract_state, batch, jax.random.key(1)).compile()
        moved: dict[str, int] = collections.Counter()
        largest = []
        global_batch = 0
        for collective in hlo_collectives(compiled.as_text()):
            moved[collective.kind] += collective.bytes
            largest.append((collective.bytes, collective.kind, collective.result[:60], collective.source[-80:]))
            global_batch += collective.kind == "all-gather" and f"[{args.batch},{args.length}," in collective.result
        scratch = compiled.memory_analysis().temp_size_in_bytes
        cells = " | ".join(f"{moved[kind] / 2**20:.1f}" for kind in kinds)
        print(f"| {d},{f},{t} | {cells} | {scratch / 2**20:.0f} | {global_batch} |", flush=True)
        for size, kind, shapes, source in sorted(largest, reverse=True)[: args.top]:
            print(f"    {size / 2**20:8.2f} MiB {kind:18s} {shapes:60s} {source}")


if __name__ == "__main__":
    main()
