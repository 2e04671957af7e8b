#!/usr/bin/env bash
# The speed benchmark on one NVIDIA GPU, with the machine's own python3 (JAX with CUDA, torch and
# transformers installed there; no virtualenv, no network): bertjax with its einsum attention and
# with cuDNN's fused attention, beside transformers' torch BertForPreTraining under bf16 autocast.
#
#   DEADLINE=440 benchmarks/bench_gpu.sh [OUT_DIR]
#       ROWS (first, default base-256-128), MORE_ROWS (after the levers), STEPS, PROFILE,
#       LEVERS=0 (skip the A/B), LEVERS_ROW, VARIANTS (gpu_levers.py's), DEADLINE (seconds: no new
#       run starts within 60 s of it)
#
# In order, most informative first, each step only while DEADLINE allows:
#   1. per row of ROWS, one `python -m benchmarks.bench` run (its own matmul peak, its own JSON under
#      OUT_DIR): bertjax einsum / cudnn and the torch peer, each bertjax step traced (PROFILE
#      steps, default 2; the JSON holds the device time by kind of op and the top ops with their
#      model modules; the compiled HLO goes beside it, gzipped);
#   2. benchmarks/gpu_levers.py: the GPU levers A/B'd in one process, the fastest one traced
#      (levers-ROW.json);
#   3. the cuDNN-attention test (tests/test_model.py; skipped off a GPU);
#   4. the rows of MORE_ROWS, as in 1 (no HLO).
# All runs share one persistent compilation cache, so a step compiled once is not compiled again.
# The console shows summary lines only; console.txt under OUT_DIR has everything. Where the
# machine lacks bertjax's pure-Python needs (ml-collections, grain, array-record, portpicker on
# the lent H100 here), carry their wheels (benchmarks/gpu_wheels.sh downloads them; its header
# has the command).
set -uo pipefail
out=${1:-runs/bench-gpu}
deadline=$((SECONDS + ${DEADLINE:-3600}))
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/bertjax-jax-cache}
log="$out/console.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
python3 -c 'import jax, flax, optax, torch, transformers; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"

left() { echo $((deadline - SECONDS)); }

bench_rows() {  # bench_rows HLO_DIR ROW...
  local hlo_dir=$1
  shift
  for row in "$@"; do
    if (($(left) < 60)); then echo "skipped $row: deadline"; continue; fi
    timeout "$(left)" python3 -m benchmarks.bench --rows="$row" --tasks="${TASKS:-pretrain}" --dtypes=bfloat16 \
      --attention=einsum,cudnn --steps="${STEPS:-10}" --warmup=3 --profile="${PROFILE:-2}" --no-pipeline \
      --hlo-dir="$hlo_dir" --out="$out/bench-$row.json" 2>&1 | tee -a "$log" | grep -vE "^\s*$|^    " | tail -16
  done
}

# shellcheck disable=SC2086  # the row lists split on spaces
bench_rows "$out" ${ROWS:-base-256-128}
if [[ "${LEVERS:-1}" == 1 ]] && (($(left) >= 120)); then
  row=${LEVERS_ROW:-base-256-128}
  timeout "$(left)" python3 -m benchmarks.gpu_levers --row="$row" --profile=2 --out="$out/levers-$row.json" \
    --deadline="$(($(left) - 10))" \
    ${VARIANTS:+--variants=$VARIANTS} 2>&1 | tee -a "$log" | tail -22
fi
if (($(left) >= 60)); then
  timeout "$(left)" python3 -m pytest -q -p no:cacheprovider tests/test_model.py -k "attention" 2>&1 | tee -a "$log" | tail -3
fi
# shellcheck disable=SC2086
bench_rows "" ${MORE_ROWS:-large-128-128 base-64-512 base-8-128}
