#!/usr/bin/env bash
# The speed benchmark on one NVIDIA GPU, with the machine's own python3 (JAX with CUDA, torch and
# transformers installed there; no virtualenv, no network): bertjax with its einsum attention and
# with cuDNN's fused attention, beside transformers' torch BertForPreTraining under bf16 autocast.
#
#   experiments/bench_gpu.sh [OUT_DIR]        ROWS=..., STEPS=..., PROFILE=..., DEADLINE=seconds override
#
# Each row is its own `python -m bertjax.bench` run (its own matmul peak, its own JSON under
# OUT_DIR), so a row that fails or outlasts DEADLINE leaves the others' results in place. Each
# bertjax step is also traced (PROFILE steps, default 2): the JSON holds its top ops by GPU time,
# each with the model module it came from; the console shows only the summary lines. Then, time
# permitting, experiments/gpu_levers.py A/Bs the GPU levers in one process (LEVERS=0 skips it).
set -uo pipefail
out=${1:-runs/bench-gpu}
rows=${ROWS:-base-256-128 large-128-128 base-64-512 base-8-128}
deadline=$((SECONDS + ${DEADLINE:-3600}))
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
python3 -c 'import jax, flax, optax, torch, transformers; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"
# cuDNN attention against the einsum attention (the test is skipped off a GPU)
python3 -m pytest -q -p no:cacheprovider tests/test_model.py -k "attention" 2>&1 | tail -3
for row in $rows; do
  left=$((deadline - SECONDS))
  if ((left < 60)); then echo "skipped $row: deadline"; continue; fi
  timeout "$left" python3 -m bertjax.bench --rows="$row" --tasks="${TASKS:-pretrain}" --dtypes=bfloat16 \
    --attention=einsum,cudnn --steps="${STEPS:-10}" --warmup=3 --profile="${PROFILE:-2}" --no-pipeline \
    --out="$out/bench-$row.json" 2>&1 | grep -vE "^\s*$|^    " | tail -14
done
left=$((deadline - SECONDS))
if [[ "${LEVERS:-1}" == 1 ]] && ((left >= 120)); then
  timeout "$left" python3 experiments/gpu_levers.py --row="${LEVERS_ROW:-base-256-128}" 2>&1 | tail -12
fi
