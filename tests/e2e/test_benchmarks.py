"""The benchmark runs end to end on a tiny size (its figures are not checked: tests never time);
its FLOP formula is checked against a count by hand."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench
from bertjax.config import ModelConfig
from bertjax.errors import ConfigError
from bertjax.training import logs

ROOT = Path(__file__).resolve().parents[2]


def test_useful_flops_formula():
    # base, batch 1, length 128: 12 layers x (128 x (8*768^2 + 4*768*3072) + 4*128^2*768)
    # + 20 x (2*768^2 + 2*768*30522) + 2*768^2, times 3 for forward + backward.
    layer = 128 * (8 * 768**2 + 4 * 768 * 3072) + 4 * 128**2 * 768
    forward = 12 * layer + 20 * (2 * 768**2 + 2 * 768 * 30522) + 2 * 768**2
    assert bench.useful_flops("base", 1, 128, "pretrain") == 3 * forward
    assert bench.useful_flops("base", 4, 128, "finetune") == 4 * 3 * (12 * layer + 2 * 768**2)
    assert bench.predictions_for(512) == 80 and bench.predictions_for(128) == 20
    # The formula lives in ModelConfig.train_flops (the train loop's tflops_per_device uses it too).
    model = ModelConfig(hidden_size=64, num_hidden_layers=3, intermediate_size=100, vocab_size=1000)
    small = 3 * (3 * (16 * (8 * 64**2 + 4 * 64 * 100) + 4 * 16**2 * 64) + 5 * (2 * 64**2 + 2 * 64 * 1000) + 2 * 64**2)
    assert model.train_flops(16, 5) == small


def test_bench_runs_on_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks.bench", "--rows=tiny-4-32", "--steps=2", "--warmup=1", f"--out={out}"]
    command.append("--dtypes=bfloat16")  # the float32 path is the same code without autocast / custom VJP
    command.append("--tasks=pretrain")  # fine-tuning's row is the same harness around another step
    # The attention implementation names the row (the default einsum is the same code path, and
    # the model tests compare the two implementations).
    command.append("--attention=xla")
    command.append("--profile=1")  # and one traced step: its ops by time
    command.append(f"--hlo-dir={tmp_path / 'hlo'}")  # and its compiled HLO, gzipped
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["impl"], r["task"], r["dtype"]) for r in report["rows"]}
    impls, tasks, dtypes = ("bertjax-xla", "transformers-torch"), ("pretrain",), ("bfloat16",)
    assert rows == {(i, t, d) for i in impls for t in tasks for d in dtypes}
    for r in report["rows"]:
        assert r["seq_per_second"] > 0 and r["peak_memory_mib"] > 0 and 0 < r["fraction_of_matmul_peak"]
        assert r["mfu"] is None  # no datasheet rate for a CPU
        # The share is of the row's own peak, measured around bertjax's steps; the peer after it shares it.
        assert abs(r["fraction_of_matmul_peak"] - r["useful_tflops"] / r["matmul_peak_tflops"]) < 1e-9
        key = (r["task"], r["row"], r["dtype"])
        ours = [
            o["matmul_peak_tflops"]
            for o in report["rows"]
            if o["impl"].startswith("bertjax") and key == (o["task"], o["row"], o["dtype"])
        ]
        assert r["matmul_peak_tflops"] > 0 and r["matmul_peak_tflops"] in ours
        if r["impl"].startswith("bertjax"):  # the traced step's top ops, traced back to the model's modules
            profile = r["profile"]
            ops = profile["ops"]
            assert 0 < len(ops) <= 25 and all(op["ms"] > 0 and op["launches"] >= 1 for op in ops)
            assert sum(op["share"] for op in ops) <= 1 + 1e-9
            # Every op's time is counted under one kind, and the step's matmuls are found as such.
            assert sum(profile["by_kind"].values()) == pytest.approx(profile["ms"])
            assert profile["by_kind"].get("matmul", 0) > 0
            assert any("BertFor" in op["source"] for op in ops), ops
        if r["impl"].startswith("bertjax"):  # XLA's plan holds at least the parameters; the process holds more
            assert 0 < r["compiled_memory_mib"] < r["peak_memory_mib"]
    assert report["matmul_peak_tflops"]["bfloat16"] > 0
    assert report["pipeline_examples_per_second"] > 0 and report["pipeline_processes_examples_per_second"] > 0
    assert "bertjax / peer" in report["table"] and "x |" in report["table"]
    # The peer trains with Hugging Face Trainer's default optimizer (torch >= 2.8): fused AdamW.
    assert report["peer_optimizer"] == "torch.optim.AdamW(lr=0.0001, eps=1e-06, weight_decay=0.01, fused=True)"
    assert report["failures"] == []
    hlo = tmp_path / "hlo" / "bertjax-xla-bfloat16-pretrain-tiny-4-32.hlo.txt.gz"
    assert "HloModule" in gzip.decompress(hlo.read_bytes()).decode()


GPU_HLO = """HloModule jit_train_step

%gemm_fusion_dot.76_computation (p0: bf16[4,8], p1: bf16[8,8]) -> bf16[4,8] {
  %p0 = bf16[4,8]{1,0} parameter(0)
  %p1 = bf16[8,8]{1,0} parameter(1)
  ROOT %dot.1 = bf16[4,8]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_scatter.2 (p0: bf16[2,8], p1: bf16[4,8], p2: s32[4]) -> bf16[2,8] {
  %p0 = bf16[2,8]{1,0} parameter(0)
  %p1 = bf16[4,8]{1,0} parameter(1)
  %p2 = s32[4]{0} parameter(2)
  ROOT %scatter.1 = bf16[2,8]{1,0} scatter(%p0, %p2, %p1), update_window_dims={1}
}

ENTRY %main.1 (a: bf16[4,8], b: bf16[8,8]) -> bf16[4,8] {
  %gemm_fusion_dot.76 = bf16[4,8]{1,0} fusion(%a, %b), kind=kCustom, calls=%gemm_fusion_dot.76_computation, metadata={op_name="jit(train_step)/dense/dot_general"}
  %cublas-lt-matmul.1 = (f32[4,2]{1,0}, s8[1024]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul"
  %dot_product_attention_fwd.60 = (bf16[1,2,4,8]{3,1,2,0}, u8[256]{0}) custom-call(%a, %a, %a), custom_call_target="__cudnn$fmhaScaleBiasSoftmax"
  %input_scatter_fusion.2 = bf16[2,8]{1,0} fusion(%c, %a, %i), kind=kInput, calls=%fused_scatter.2
  ROOT %copy.3 = bf16[4,8]{1,0} copy(%gemm_fusion_dot.76)
}
"""


def test_profile_kinds_of_gpu_ops():
    """Ops by kind, from an HLO module as XLA:GPU writes it, and from the kernel names that a GPU
    trace gives where it names no HLO op (nvjet: cuBLAS; sdpa: cuDNN's fused attention)."""
    kinds = bench.hlo_kinds(GPU_HLO)
    assert kinds["gemm_fusion_dot.76"] == "matmul"  # a fusion around a dot (Triton's GEMM)
    assert kinds["cublas-lt-matmul.1"] == "matmul"
    assert kinds["dot_product_attention_fwd.60"] == "attention"
    assert kinds["input_scatter_fusion.2"] == "fusion" and kinds["copy.3"] == "copy"
    assert bench.hlo_sources(GPU_HLO)["gemm_fusion_dot.76"] == "jit(train_step)/dense/dot_general"
    assert bench._kind_of("input_scatter_fusion_2", kinds) == "fusion"
    assert bench._kind_of("nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT", kinds) == "matmul"
    assert bench._kind_of("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16", kinds) == "attention"
    assert bench._kind_of("memcpy", kinds) == "other"


def test_mfu_is_useful_flops_over_the_datasheet_rate():
    measured = {"step_times": [0.2, 0.1, 0.3], "peak_bytes": 2**30, "compile_seconds": 1.0}
    record = bench.summarise("bertjax", "pretrain", "base-8-128", "bfloat16", measured, 500e12, 1000.0)
    flops = bench.useful_flops("base", 8, 128, "pretrain") / 0.2
    assert record["step_seconds"] == 0.2
    assert abs(record["mfu"] - flops / 1000e12) < 1e-12
    assert abs(record["fraction_of_matmul_peak"] - flops / 500e12) < 1e-12
    assert bench.DATASHEET_TFLOPS[("NVIDIA H100 80GB HBM3", "bfloat16")] == 989.4
    assert logs.throughput(2e12, 100.0, 4, 989.4) == {"tflops_per_device": 50.0, "mfu": 50.0 / 989.4}
    assert logs.throughput(2e12, 100.0, 4, None) == {"tflops_per_device": 50.0}


def test_gpu_levers_runs_every_variant_on_the_same_function():
    """benchmarks/gpu_levers.py (the GPU A/B harness) at a tiny size on the CPU: every variant trains
    the same weights on the same batch, so the first losses agree to 1e-3 relative (bf16; "xla" also
    drops attention dropout, a change far below that at initialisation), and each gets a row."""
    command = [sys.executable, "-m", "benchmarks.gpu_levers", "--row=tiny-4-32", "--rounds=1", "--steps=1"]
    command.append("--variants=einsum,xla+f32-dots")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = {
        line.split(":")[0]: float(line.rsplit("first loss ", 1)[1])
        for line in result.stdout.splitlines()
        if "first loss" in line
    }
    assert losses.keys() == {"einsum", "xla+f32-dots"}
    assert max(losses.values()) - min(losses.values()) < 1e-3 * losses["einsum"], losses
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert [row.split(" | ")[0][2:] for row in rows] == ["einsum", "xla+f32-dots"], rows
    # A lever it does not know is a one-line usage error, before anything compiles.
    wrong = subprocess.run([*command[:-1], "--variants=einsum+bf16-dots"], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode == 2 and "'einsum+bf16-dots' is not an attention" in wrong.stderr.strip().splitlines()[-1]


def test_bench_model_is_validated_as_a_runs_config():
    """The bench builds its model through the run's validation: the pair no run could use (cuDNN
    attention in float32) is a ConfigError the bench skips, and attention dropout is on only where
    the implementation has it."""
    base = bench.bench_model_config("base", "bfloat16", "einsum")
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == (
        12,
        768,
        12,
        3072,
    )
    assert base.vocab_size == 30522 and base.attention_probs_dropout_prob == 0.1
    assert bench.bench_model_config("mini", "bfloat16", "cudnn").attention_probs_dropout_prob == 0.0
    with pytest.raises(ConfigError, match="cudnn"):
        bench.bench_model_config("mini", "float32", "cudnn")
    assert bench.attention_of("bertjax") == "einsum" and bench.attention_of("bertjax-cudnn") == "cudnn"


def test_sharded_collectives_tabulates_what_each_mesh_moves():
    """benchmarks/sharded_collectives.py at a tiny size: one row per mesh, bytes per kind of
    collective; data parallelism moves gradients by all-reduce only, and no mesh all-gathers the
    global batch's activations."""
    command = [sys.executable, "-m", "benchmarks.sharded_collectives", "--size=tiny", "--layers=1", "--batch=16"]
    command += ["--length=32", "--meshes", "4,1,1", "2,2,2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {
        line.split(" | ")[0][2:]: [float(cell) for cell in line.strip(" |").split(" | ")[1:]]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    }
    assert rows.keys() == {"4,1,1", "2,2,2"}
    gather, reduce, to_all, permute, scatter, scratch, global_batch = rows["4,1,1"]
    assert reduce > 0 and gather == to_all == permute == scatter == 0 and scratch > 0
    assert rows["2,2,2"][0] > 0 and rows["2,2,2"][-1] == 0 and global_batch == 0


def test_cpu_matmuls_counts_each_product_and_times_both_libraries():
    """benchmarks/cpu_matmuls.py: the FLOPs of its products against hand counts, and a run at a
    tiny size prints one row per product with a rate for XLA and for torch."""
    from benchmarks import cpu_matmuls

    counted = {name: cpu_matmuls.flops(s, x, w) for name, s, x, w in cpu_matmuls.products(1024, 160)}
    assert counted["intermediate dW"] == counted["intermediate fwd"] == 2 * 1024 * 768 * 3072
    assert counted["attention dense dX"] == 2 * 1024 * 768 * 768
    assert counted["decoder fwd (masked)"] == counted["decoder dW (masked)"] == 2 * 160 * 768 * 30522
    assert counted["output dW"] == counted["output dX"] == 2 * 1024 * 3072 * 768
    assert counted["attention scores"] == counted["attention context"] == 2 * 8 * 12 * 128 * 128 * 64
    command = [sys.executable, "-m", "benchmarks.cpu_matmuls", "--tokens=256", "--repeats=1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip(" |").split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(counted)
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_bench_records_the_cpu_model():
    """The results name the CPU (machines of one kind differ: AMD EPYC, Intel Xeon)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    assert bench.cpu_model() == (names[0] if names else bench.platform.processor() or "unknown CPU")
