#!/usr/bin/env bash
# The speed benchmark on one NVIDIA GPU, with the machine's own python3 (JAX with CUDA, torch and
# transformers installed there; no virtualenv, no network): bertjax with its einsum attention and
# with cuDNN's fused attention, beside transformers' torch BertForPreTraining under bf16 autocast.
#
#   DEADLINE=440 experiments/bench_gpu.sh [OUT_DIR]
#       ROWS (first, default base-256-128), MORE_ROWS (after the levers), STEPS, PROFILE,
#       LEVERS=0 (skip the A/B), DEADLINE (seconds: no new run starts within 60 s of it)
#
# In order, most informative first, each step only while DEADLINE allows:
#   1. the cuDNN-attention test (tests/test_model.py; skipped off a GPU);
#   2. per row of ROWS, one `python -m bertjax.bench` run (its own matmul peak, its own JSON under
#      OUT_DIR): bertjax einsum / cudnn and the torch peer, each bertjax step traced (PROFILE
#      steps, default 2; the JSON holds the top ops by GPU time with their model modules);
#   3. experiments/gpu_levers.py: the GPU levers A/B'd in one process;
#   4. the rows of MORE_ROWS, as in 2.
# The console shows summary lines only. Where the machine lacks bertjax's pure-Python needs
# (ml-collections, grain, array-record, portpicker on the lent H100 here), carry their wheels
# (experiments/gpu_wheels.sh downloads them; its header has the command).
set -uo pipefail
out=${1:-runs/bench-gpu}
deadline=$((SECONDS + ${DEADLINE:-3600}))
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
python3 -c 'import jax, flax, optax, torch, transformers; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_model.py -k "attention" 2>&1 | tail -3

bench_rows() {
  for row in "$@"; do
    local left=$((deadline - SECONDS))
    if ((left < 60)); then echo "skipped $row: deadline"; continue; fi
    timeout "$left" python3 -m bertjax.bench --rows="$row" --tasks="${TASKS:-pretrain}" --dtypes=bfloat16 \
      --attention=einsum,cudnn --steps="${STEPS:-10}" --warmup=3 --profile="${PROFILE:-2}" --no-pipeline \
      --out="$out/bench-$row.json" 2>&1 | grep -vE "^\s*$|^    " | tail -14
  done
}

# shellcheck disable=SC2086  # the row lists split on spaces
bench_rows ${ROWS:-base-256-128}
left=$((deadline - SECONDS))
if [[ "${LEVERS:-1}" == 1 ]] && ((left >= 120)); then
  timeout "$left" python3 experiments/gpu_levers.py --row="${LEVERS_ROW:-base-256-128}" 2>&1 | tail -12
fi
# shellcheck disable=SC2086
bench_rows ${MORE_ROWS:-large-128-128 base-64-512 base-8-128}
