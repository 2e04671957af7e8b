"""`make bench`: the speed of bertjax's train steps, side by side with transformers' torch BERT.

    python -m benchmarks.bench [--rows=mini-16-128,base-8-128,base-8-512] [--steps=5] [--no-peers] [--out=runs/bench/bench.json]

For each row (model size, batch, sequence length) and each task (pretraining: MLM + NSP;
fine-tuning: sequence classification) it measures, in a fresh process per measurement so that
peak memory is the row's own: compile time, the median step time over `--steps` timed steps after
`--warmup` steps, sequences/s, tokens/s, useful TFLOP/s and their share of a matmul peak measured
in the same run (and, on a GPU whose datasheet rate is known, of that rate: the MFU), and peak memory (device peak on an accelerator, process peak RSS on the CPU; the
JSON also has bertjax's compiled memory plan: arguments + scratch + new outputs).
With the peers (transformers' BertForPreTraining / BertForSequenceClassification with torch
AdamW, same shapes, same objective, same threads) each row also gets the ratio bertjax / peer.
It also measures how many pretraining examples per second the input pipeline builds.
`--attention=einsum,cudnn` measures bertjax once per attention implementation (ModelConfig.attention;
those other than einsum run without attention dropout, which jax.nn.dot_product_attention lacks).

Useful FLOPs of one training step = 3 x forward FLOPs (backward = 2 x forward), forward per sequence:
    layers x (length x (8 H^2 + 4 H I) + 4 length^2 H)      encoder matmuls + attention scores/values
    + predictions x (2 H^2 + 2 H V)                          MLM head at the masked positions only
    + 2 H^2                                                  pooler (+ the 2-way heads, negligible)
where H = hidden, I = intermediate, V = vocab. The peer computes MLM logits at every position
(its default); its extra work is not counted as useful.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from bertjax import cli
from bertjax.config import ATTENTION_IMPLEMENTATIONS, SIZES, ModelConfig, model_config_from_dict
from bertjax.errors import ConfigError
from bertjax.training.logs import DATASHEET_TFLOPS

DEFAULT_ROWS = ("mini-16-128", "base-8-128", "base-8-512")
VOCAB = 30522


def parse_row(row: str) -> tuple[str, int, int]:
    """'base-8-512' -> ('base', 8, 512)."""
    size, batch, length = row.split("-")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} in row {row!r}")
    return size, int(batch), int(length)


def predictions_for(length: int) -> int:
    return (
        max(1, round(length * 0.15)) if length < 128 else 20 * length // 128
    )  # google-research/bert: 20 at 128, 80 at 512


def useful_flops(size: str, batch: int, length: int, task: str) -> float:
    """Training FLOPs of one step (see the module docstring and ModelConfig.train_flops)."""
    predictions = predictions_for(length) if task == "pretrain" else 0
    return batch * bench_model_config(size, "float32", "einsum").train_flops(length, predictions)


# --------------------------------------------------------------------------------------------
# One measurement (run in its own process)


def _random_batch(batch: int, length: int, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    predictions = predictions_for(length)
    lengths = rng.integers(length // 2, length + 1, batch)
    lengths[0] = length
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    positions = np.sort(
        np.stack([rng.choice(np.arange(1, n - 1), predictions, replace=False) for n in lengths]), axis=1
    )
    return {
        "input_ids": (rng.integers(1000, VOCAB, (batch, length)) * mask).astype(np.int32),
        "token_type_ids": ((np.arange(length)[None] >= lengths[:, None] // 2) * mask).astype(np.int32),
        "attention_mask": mask,
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": rng.integers(1000, VOCAB, (batch, predictions)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, batch).astype(np.int32),
        "labels": rng.integers(0, 2, batch).astype(np.float32),
        "weights": np.ones(batch, np.float32),
    }


def timed(step: Any, steps: int, warmup: int) -> list[float]:
    """Seconds of each of `steps` calls of `step`, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure_bertjax(
    size: str,
    batch: int,
    length: int,
    task: str,
    steps: int,
    warmup: int,
    dtype: str,
    attention: str = "einsum",
    profile_steps: int = 0,
    hlo_path: Path | None = None,
) -> dict[str, Any]:
    """One bertjax row: compile time, step times, the matmul peak around them, memory, and with
    `profile_steps` a trace of that many more steps (`hlo_path`: write the compiled HLO there, gzipped)."""
    import jax

    step = bertjax_step(size, batch, length, task, dtype, attention)
    peaks = [measure_matmul_peak(dtype)]  # the row's own peak, just before and just after its steps
    times = timed(step.run, steps, warmup)
    peaks.append(measure_matmul_peak(dtype))
    profile = profile_step(step.run, profile_steps, step.compiled.as_text()) if profile_steps else None
    if hlo_path is not None:
        hlo_path.parent.mkdir(parents=True, exist_ok=True)
        hlo_path.write_bytes(gzip.compress(step.compiled.as_text().encode()))
    memory = step.compiled.memory_analysis()
    compiled_bytes = None
    if memory is not None:  # what XLA plans for one step: arguments, scratch, and outputs not aliased to inputs
        out_bytes = memory.output_size_in_bytes - memory.alias_size_in_bytes
        compiled_bytes = memory.argument_size_in_bytes + memory.temp_size_in_bytes + out_bytes
    return {
        "compile_seconds": step.compile_seconds,
        "step_times": times,
        "matmul_flops": max(peaks),
        "peak_bytes": _peak_bytes(jax),
        "compiled_bytes": compiled_bytes,
        "profile": profile,
    }


def attention_of(impl: str) -> str:
    """'bertjax' -> 'einsum', 'bertjax-cudnn' -> 'cudnn'."""
    return impl.partition("-")[2] or "einsum"


def bench_model_config(size: str, dtype: str, attention: str) -> ModelConfig:
    """The bench's model: a SIZES shape with BERT's vocabulary, validated as a run's config is
    (ConfigError for a pair no run could use, such as cuDNN attention in float32). Attention
    dropout is 0.1 where the implementation has it (einsum) and 0 where it has none."""
    return model_config_from_dict(
        dict(
            size=size,
            vocab_size=VOCAB,
            dtype=dtype,
            attention=attention,
            attention_probs_dropout_prob=0.1 if attention == "einsum" else 0.0,
        )
    )


@dataclasses.dataclass
class CompiledStep:
    """One compiled bertjax train step on random data; `run()` takes a step and waits for it."""

    compiled: Any
    compile_seconds: float
    run: Callable[[], dict[str, Any]]


def bertjax_step(size: str, batch: int, length: int, task: str, dtype: str, attention: str = "einsum") -> CompiledStep:
    """bertjax's pretraining ("pretrain") or sequence-classification ("finetune") step at a bench row's
    shape, compiled for one device, with its state and a random batch on the device."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from bertjax.config import MeshConfig, OptimConfig
    from bertjax.data.labelled import TaskSpec
    from bertjax.model.bert import BertForPreTraining
    from bertjax.parallel import sharding
    from bertjax.tasks.classification import ClassificationTask
    from bertjax.training import finetuning, optim, pretraining, update
    from bertjax.training.state import create_sharded_state

    config = bench_model_config(size, dtype, attention)
    mesh_config = MeshConfig()
    mesh = sharding.make_mesh(mesh_config)
    tx, schedule = optim.make_optimizer(OptimConfig(learning_rate=1e-4, warmup_steps=10), 1000)
    data = _random_batch(batch, length)
    batch_sharding = sharding.batch_sharding(mesh)
    if task == "pretrain":
        model = BertForPreTraining(config)
        state, shardings = create_sharded_state(
            jax.random.key(0), pretraining.param_init(model, length), tx, mesh, mesh_config
        )
        step_fn = pretraining.compile_steps(model, tx, schedule, shardings, mesh, 1).train
        inputs = {k: jax.device_put(data[k], batch_sharding) for k in pretraining.BATCH_KEYS}
    else:
        spec = TaskSpec(name="bench", kind="classification", labels=("0", "1"), metrics=("accuracy",), layouts={})
        classifier = ClassificationTask(spec, train=None, evals={}, tests={})
        model = classifier.model(config)
        dummy = jnp.zeros((1, length), jnp.int32)
        state, shardings = create_sharded_state(
            jax.random.key(0),
            lambda key: model.init({"params": key}, dummy, dummy, dummy)["params"],
            tx,
            mesh,
            mesh_config,
        )
        step_fn = update.compile_train_step(finetuning.objective(classifier, model), tx, schedule, shardings, mesh, 1)
        keys = (*classifier.input_keys, "labels", "weights")
        inputs = {k: jax.device_put(data[k], batch_sharding) for k in keys}
    rng = jax.random.key(1)
    holder = {"state": state}
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(mesh_config)):
        start = time.perf_counter()
        compiled = step_fn.lower(state, inputs, rng).compile()
        compile_seconds = time.perf_counter() - start

    def one_step() -> dict[str, Any]:
        holder["state"], metrics = compiled(holder["state"], inputs, rng)
        return jax.block_until_ready(metrics)

    return CompiledStep(compiled, compile_seconds, one_step)


def profile_step(step: Callable[[], Any], steps: int, hlo: str) -> dict[str, Any]:
    """The step's ops by device time, from a jax.profiler trace of `steps` more steps (see
    `op_times`; `hlo`: the compiled step's HLO text, for each op's source and kind)."""
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(steps):
                step()
        (path,) = Path(directory).rglob("*.xplane.pb")
        return op_times(path, steps, hlo_sources(hlo), hlo_kinds(hlo))


def hlo_sources(hlo: str) -> dict[str, str]:
    """HLO instruction name -> the jax op_name of its metadata (its module path in the model)."""
    pattern = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?metadata=\{[^}]*?op_name="([^"]*)"', re.MULTILINE)
    return {name: source for name, source in pattern.findall(hlo)}


def hlo_kinds(hlo: str) -> dict[str, str]:
    """HLO instruction name -> what kind of work it is: "matmul" (a dot, a library GEMM call, or a
    fusion around a dot: XLA:CPU's, Triton's or cuDNN's), "attention" (cuDNN's fused attention),
    "fusion" (XLA's other fused kernels: elementwise, reductions), "collective", or the opcode."""
    instruction = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = [^=]*?\s([a-z][\w\-]*)\(")
    computation = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
    calls = re.compile(r"calls=%?([\w.\-]+)")
    with_dot: set[str] = set()  # computations that hold a matmul
    fusions: dict[str, str] = {}  # fusion instruction -> the computation it calls
    kinds = {}
    current = ""
    for line in hlo.splitlines():
        header = computation.match(line)
        if header:
            current = header.group(1)
            continue
        match = instruction.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        if "__cudnn$fmha" in line:
            kind = "attention"
        elif opcode in ("dot", "convolution") or any(
            t in line for t in ("__cublas", "__triton_gemm", "__cudnn$fusion")
        ):
            kind = "matmul"
        elif opcode == "fusion":
            kind = "fusion"
            called = calls.search(line)
            if called:
                fusions[name] = called.group(1)
        elif opcode.startswith(("all-", "reduce-scatter", "collective")):
            kind = "collective"
        else:
            kind = opcode
        if kind in ("matmul", "attention"):
            with_dot.add(current)
        kinds[name] = kind
    for name, called in fusions.items():
        if called in with_dot:
            kinds[name] = "matmul"
    return kinds


def op_times(
    xspace: Path,
    steps: int,
    sources: dict[str, str] | None = None,
    kinds: dict[str, str] | None = None,
    top: int = 25,
) -> dict[str, Any]:
    """The ops of a profiler trace (an .xplane.pb), per step: "ms" (all ops' time), "by_kind" (ms
    per `hlo_kinds` kind, largest first) and "ops", the `top` ops by time (name, launches,
    milliseconds, share of all op time, kind and the jax op it came from: `sources`, by HLO name).

    On a GPU the ops are the device plane's "XLA Ops" line (HLO ops; their kernels on the stream
    lines when that line is absent). On the CPU they are the events of XLA's threads that name
    an HLO op: the time from an op's start to its end on the thread that ran it. Independent ops
    can overlap and an op's helper threads are not counted, so the shares are approximate there.
    """
    from jax.profiler import ProfileData

    data = ProfileData.from_file(str(xspace))
    devices = [plane for plane in data.planes if plane.name.startswith("/device:")]
    totals: dict[str, list[float]] = {}
    for plane in devices or [plane for plane in data.planes if plane.name == "/host:CPU"]:
        lines = list(plane.lines)
        if devices:
            chosen = [line for line in lines if line.name == "XLA Ops"] or [
                line for line in lines if line.name.startswith("Stream")
            ]
        else:
            chosen = [line for line in lines if line.name.startswith("tf_XLA")]
        for line in chosen:
            for event in line.events:
                stats = dict(event.stats)
                if not devices and "hlo_op" not in stats:  # thread-pool bookkeeping
                    continue
                # A kernel on a stream line names its HLO op in its stats (a GEMM's kernel does not
                # otherwise say which dot it computes).
                entry = totals.setdefault(str(stats.get("hlo_op") or event.name), [0, 0.0])
                entry[0] += 1
                entry[1] += event.duration_ns
    everything = sum(ns for _, ns in totals.values()) or 1.0
    sources, kinds = sources or {}, kinds or {}
    by_kind: dict[str, float] = {}
    for name, (_, ns) in totals.items():
        kind = _kind_of(name, kinds)
        by_kind[kind] = by_kind.get(kind, 0.0) + ns / steps / 1e6
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:top]
    return {
        "ms": everything / steps / 1e6,
        "by_kind": dict(sorted(by_kind.items(), key=lambda item: -item[1])),
        "ops": [
            {
                "op": name,
                "kind": _kind_of(name, kinds),
                "source": sources.get(name, ""),
                "launches": count / steps,
                "ms": ns / steps / 1e6,
                "share": ns / everything,
            }
            for name, (count, ns) in ranked
        ],
    }


def _kind_of(name: str, kinds: dict[str, str]) -> str:
    """An op's kind (`hlo_kinds`) by its HLO name, or by its kernel's name where the trace gives
    kernels ("input_scatter_fusion_2" for input_scatter_fusion.2; cuBLAS's and cuDNN's own)."""
    if name in kinds:
        return kinds[name]
    dotted = re.sub(r"_(\d+)$", r".\1", name)
    if dotted in kinds:
        return kinds[dotted]
    if re.search(r"sdpa|fmha|flash", name):
        return "attention"
    if re.search(r"nvjet|gemm|cutlass|cublas|sm90_xmma", name):
        return "matmul"
    return "other"


def _peak_bytes(jax_module: Any = None) -> int:
    if jax_module is not None:
        stats = jax_module.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


PEER_ADAMW = {"lr": 1e-4, "eps": 1e-6, "weight_decay": 0.01, "fused": True}


def measure_torch(size: str, batch: int, length: int, task: str, steps: int, warmup: int, dtype: str) -> dict[str, Any]:
    import contextlib

    import torch
    import transformers

    layers, hidden = SIZES[size]
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
    )
    data = _random_batch(batch, length)
    inputs = {k: torch.tensor(data[k], dtype=torch.long) for k in ("input_ids", "token_type_ids", "attention_mask")}
    if task == "pretrain":
        model = transformers.BertForPreTraining(config).train()
        labels = torch.full((batch, length), -100, dtype=torch.long)
        positions = torch.tensor(data["masked_lm_positions"], dtype=torch.long)
        labels.scatter_(1, positions, torch.tensor(data["masked_lm_ids"], dtype=torch.long))
        inputs |= {
            "labels": labels,
            "next_sentence_label": torch.tensor(data["next_sentence_labels"], dtype=torch.long),
        }
    else:
        model = transformers.BertForSequenceClassification(config).train()
        inputs["labels"] = torch.tensor(data["labels"], dtype=torch.long)
    # On a GPU (a CUDA build of torch), the peer runs there too.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    # Fused AdamW: one kernel over all parameters, Hugging Face Trainer's default optimizer with torch
    # >= 2.8 ("adamw_torch_fused"). torch's default updates one tensor at a time on a CPU, about
    # 3x slower for BERT-base (docs/performance.md).
    optimizer = torch.optim.AdamW(model.parameters(), **PEER_ADAMW)

    # bf16: torch's automatic mixed precision (fp32 parameters), the peer of bertjax's bf16 compute.
    autocast = torch.autocast(device, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    one_step()  # the first step builds the optimizer state: counted as its "compile"
    compile_seconds = time.perf_counter() - start
    times = timed(one_step, steps, warmup)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_bytes()
    return {"compile_seconds": compile_seconds, "step_times": times, "peak_bytes": peak}


def measure_matmul_peak(dtype: str, repeats: int = 5) -> float:
    """FLOP/s of large square matmuls in `dtype` (float32 accumulation) on the default device: the
    best of two sizes, each the median of `repeats`. The peak the step is compared with."""
    import jax
    import jax.numpy as jnp

    matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    best = 0.0
    for n in (1024, 2048) if jax.default_backend() == "cpu" else (4096, 8192):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
        times = timed(functools.partial(lambda x: matmul(x).block_until_ready(), a), repeats, 2)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def measure_pipeline(batch: int, processes: int = 0, seconds: float = 2.0) -> float:
    """Pretraining examples per second built by the input pipeline (read-time masking): 2 grain
    threads, or with `processes` > 0 that many loader processes of one thread each."""
    import tempfile

    from bertjax.config import DataConfig
    from bertjax.data import pretraining as pretraining_data
    from bertjax.data import samples
    from bertjax.data.tokenizer import load_tokenizer

    root = Path(__file__).resolve().parents[1]
    files = samples.fetch_samples(root / "data" / "samples", root / "data" / "cache")
    config = DataConfig(
        train_files=(str(files["news"]),), corpus_format="paragraphs", vocab_file=str(files["vocab"]), max_documents=300
    )
    tokenizer = load_tokenizer(config.vocab_file)
    with tempfile.TemporaryDirectory() as cache:
        prepared = pretraining_data.prepare(config, tokenizer, cache)
        examples = pretraining_data.load_split(prepared, "train", config, tokenizer)
        threads = 1 if processes else 2
        iterator = pretraining_data.batch_iterator(examples, 0, 10**9, batch, threads, num_processes=processes)
        next(iterator)  # the processes' start-up is not counted
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            next(iterator)
            count += batch
        rate = count / (time.perf_counter() - start)
        iterator.close()
        return rate


def worker(args: argparse.Namespace) -> None:
    """One measurement, printed as a JSON line (run in a child process)."""
    kind, task, row = args.worker.split(":")
    if kind == "peak":
        print(json.dumps({"matmul_flops": measure_matmul_peak(args.dtype)}))
        return
    if kind == "pipeline":  # pipeline:<processes>:<batch>
        print(json.dumps({"examples_per_second": measure_pipeline(int(row), int(task))}))
        return
    size, batch, length = parse_row(row)
    if kind.startswith("bertjax"):  # "bertjax" or "bertjax-<attention>"
        cli.use_huge_pages()  # as bertjax's entry points run; the peer keeps glibc's defaults
        attention = attention_of(kind)
        hlo_path = Path(args.hlo_dir) / f"{kind}-{args.dtype}-{task}-{row}.hlo.txt.gz" if args.hlo_dir else None
        result = measure_bertjax(
            size, batch, length, task, args.steps, args.warmup, args.dtype, attention, args.profile, hlo_path
        )
    else:
        result = measure_torch(size, batch, length, task, args.steps, args.warmup, args.dtype)
    print(json.dumps(result))


def _child(spec: str, args: argparse.Namespace, dtype: str = "float32") -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench", f"--worker={spec}", f"--steps={args.steps}"]
    command += [f"--warmup={args.warmup}", f"--dtype={dtype}"]
    if spec.startswith("bertjax"):  # only bertjax's steps are traced
        command.append(f"--profile={args.profile}")
        if args.hlo_dir:
            command.append(f"--hlo-dir={args.hlo_dir}")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark {spec} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The table


def summarise(
    name: str,
    task: str,
    row: str,
    dtype: str,
    measured: dict[str, Any],
    peak_flops: float,
    datasheet_tflops: float | None = None,
) -> dict[str, Any]:
    size, batch, length = parse_row(row)
    step = statistics.median(measured["step_times"])
    flops = useful_flops(size, batch, length, task) / step
    return {
        "impl": name,
        "dtype": dtype,
        "task": task,
        "row": row,
        "step_seconds": step,
        "seq_per_second": batch / step,
        "tokens_per_second": batch * length / step,
        "useful_tflops": flops / 1e12,
        "fraction_of_matmul_peak": flops / peak_flops,
        "matmul_peak_tflops": peak_flops / 1e12,
        # model FLOPs utilisation: useful FLOP/s over the device's datasheet rate (None where unknown)
        "mfu": flops / (datasheet_tflops * 1e12) if datasheet_tflops else None,
        "peak_memory_mib": measured["peak_bytes"] / 2**20,
        # bertjax only: XLA's compiled plan for the step (no allocator, runtime or compiler overhead)
        "compiled_memory_mib": measured["compiled_bytes"] / 2**20 if measured.get("compiled_bytes") else None,
        "compile_seconds": measured["compile_seconds"],
    }


def format_table(records: list[dict[str, Any]]) -> str:
    header = "| impl | dtype | task | size-batch-length | step (s) | seq/s | tokens/s | useful TFLOP/s | of matmul peak | MFU | peak MiB | compile (s) | bertjax / peer |"
    lines = [header, "|" + "---|" * 13]
    peers = {(r["task"], r["row"], r["dtype"]): r for r in records if not r["impl"].startswith("bertjax")}
    for r in records:
        peer = peers.get((r["task"], r["row"], r["dtype"])) if r["impl"].startswith("bertjax") else None
        ratio = f"{r['seq_per_second'] / peer['seq_per_second']:.2f}x" if peer else ""
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else ""
        lines.append(
            f"| {r['impl']} | {r['dtype']} | {r['task']} | {r['row']} | {r['step_seconds']:.3f} | {r['seq_per_second']:.1f} | "
            f"{r['tokens_per_second']:.0f} | {r['useful_tflops']:.3f} | {r['fraction_of_matmul_peak']:.0%} | {mfu} | "
            f"{r['peak_memory_mib']:.0f} | {r['compile_seconds']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo on Linux): machines of one kind can be AMD EPYC or
    Intel Xeon, whose matmul libraries run at different speeds (docs/performance.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="size-batch-length, comma-separated")
    parser.add_argument("--tasks", default="pretrain,finetune")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument(
        "--dtypes",
        default="float32,bfloat16",
        help="compute dtypes, comma-separated: float32, bfloat16 (fp32 params; the peer under torch autocast)",
    )
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)  # a worker's dtype
    parser.add_argument(
        "--attention",
        default="einsum",
        help="bertjax's attention implementations, comma-separated: einsum, xla, cudnn (GPU, bf16)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip transformers' torch BERT")
    parser.add_argument(
        "--profile", type=int, default=0, help="trace this many more bertjax steps and print their top ops by time"
    )
    parser.add_argument("--hlo-dir", default="", help="write each bertjax step's compiled HLO there (gzipped)")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the input-pipeline measurement")
    parser.add_argument("--out", default="runs/bench/bench.json")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    import jax

    rows = [r for r in args.rows.split(",") if r]
    for row in rows:
        parse_row(row)
    dtypes = [d for d in args.dtypes.split(",") if d]
    attentions = [a for a in args.attention.split(",") if a]
    for attention in attentions:
        if attention not in ATTENTION_IMPLEMENTATIONS:
            parser.error(f"--attention: unknown implementation {attention!r}, expected {ATTENTION_IMPLEMENTATIONS}")
    impls = [f"bertjax-{a}" if a != "einsum" else "bertjax" for a in attentions]
    device_kind = jax.devices()[0].device_kind
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    peaks = {}
    row_peaks: dict[tuple[str, str, str], float] = {}  # (task, row, dtype) -> the bertjax row's own peak
    for dtype in dtypes:
        peaks[dtype] = _child("peak:-:-", args, dtype)["matmul_flops"]
        print(f"matmul peak: {peaks[dtype] / 1e12:.3f} TFLOP/s ({dtype}, {jax.default_backend()})", flush=True)
        datasheet = DATASHEET_TFLOPS.get((device_kind, dtype))
        for task in args.tasks.split(","):
            for row in rows:
                for impl in impls + ([] if args.no_peers else ["torch"]):
                    if impl.startswith("bertjax"):
                        try:  # a pair no run could use (cuDNN attention in float32) is not measured
                            bench_model_config("mini", dtype, attention_of(impl))
                        except ConfigError as error:
                            print(f"skipped {impl} {dtype} {task} {row}: {error}", flush=True)
                            continue
                    try:
                        measured = _child(f"{impl}:{task}:{row}", args, dtype)
                    except RuntimeError as error:  # one failed measurement (out of memory, say) keeps the others
                        failures.append({"impl": impl, "task": task, "row": row, "dtype": dtype, "error": str(error)})
                        print(f"FAILED {impl} {dtype} {task} {row}: {str(error)[-800:]}", flush=True)
                        continue
                    name = impl if impl.startswith("bertjax") else "transformers-torch"
                    if "matmul_flops" in measured:  # bertjax measures the peak around its steps; the peer
                        row_peaks[(task, row, dtype)] = measured["matmul_flops"]  # that comes next shares it
                    peak = row_peaks.get((task, row, dtype), peaks[dtype])
                    record = summarise(name, task, row, dtype, measured, peak, datasheet)
                    if measured.get("profile"):
                        record["profile"] = measured["profile"]
                    records.append(record)
                    mfu = f", MFU {record['mfu']:.1%}" if record["mfu"] is not None else ""
                    print(
                        f"{name:>18} {dtype:8s} {task:8s} {row:12s} {record['seq_per_second']:8.1f} seq/s, "
                        f"{record['useful_tflops']:.3f} TFLOP/s = {record['fraction_of_matmul_peak']:.0%} of peak "
                        f"{record['matmul_peak_tflops']:.3f}{mfu}, "
                        f"{record['peak_memory_mib']:.0f} MiB, compile {record['compile_seconds']:.1f} s",
                        flush=True,
                    )
                    if record.get("profile"):
                        profile = record["profile"]
                        kinds = ", ".join(f"{kind} {ms:.2f}" for kind, ms in profile["by_kind"].items())
                        print(f"  ops {profile['ms']:.2f} ms a step ({kinds})", flush=True)
                        for op in profile["ops"]:
                            print(
                                f"    {op['ms']:9.3f} ms {op['share']:6.1%} x{op['launches']:<4g} {op['kind'][:9]:9s} "
                                f"{op['op'][:36]:36s} {op['source'][-90:]}",
                                flush=True,
                            )
    result: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {cpu_model()}, {os.cpu_count()} CPUs, backend {jax.default_backend()}, {device_kind}",
        "versions": _versions(),
        "peer_optimizer": "torch.optim.AdamW(" + ", ".join(f"{k}={v}" for k, v in PEER_ADAMW.items()) + ")",
        "matmul_peak_tflops": {dtype: peak / 1e12 for dtype, peak in peaks.items()},
        "rows": records,
        "failures": failures,
    }
    pretraining_records = [r for r in records if r["impl"].startswith("bertjax") and r["task"] == "pretrain"]
    if not args.no_pipeline and pretraining_records:
        # At the batch of the fastest pretraining row: 2 threads (the default loader), then one loader
        # process per CPU (data.num_processes).
        fastest = max(pretraining_records, key=lambda r: r["seq_per_second"])
        batch, consumed = parse_row(fastest["row"])[1], fastest["seq_per_second"]
        processes = os.cpu_count() or 1
        pipeline = _child(f"pipeline:0:{batch}", args)["examples_per_second"]
        pipeline_processes = _child(f"pipeline:{processes}:{batch}", args)["examples_per_second"]
        result |= {
            "pipeline_batch": batch,
            "pipeline_examples_per_second": pipeline,
            "pipeline_over_fastest_step": pipeline / consumed,
            "pipeline_processes": processes,
            "pipeline_processes_examples_per_second": pipeline_processes,
            "pipeline_processes_over_fastest_step": pipeline_processes / consumed,
        }
        print(
            f"input pipeline at batch {batch}: {pipeline:.0f} examples/s with 2 threads = {pipeline / consumed:.1f}x "
            f"the fastest pretraining step; {pipeline_processes:.0f} with {processes} processes = "
            f"{pipeline_processes / consumed:.1f}x",
            flush=True,
        )
    table = format_table(records)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "table": table}, indent=2))
    print(f"written: {out}")
    if failures:
        sys.exit(
            f"{len(failures)} measurement(s) failed: "
            + ", ".join(f"{f['impl']}:{f['task']}:{f['row']}" for f in failures)
        )


if __name__ == "__main__":
    main()
