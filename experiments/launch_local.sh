#!/usr/bin/env bash
# Several processes on this machine, as a stand-in for several hosts: each gets its own share of
# the CPU devices (or GPUs) and talks to the others through a coordinator on 127.0.0.1 only.
#
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 WORKDIR=runs/local2 experiments/launch_local.sh [--config.x=y ...]
set -euo pipefail
NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
PORT=${PORT:-12355}
WORKDIR=${WORKDIR:-runs/local}
CONFIG=${CONFIG:-configs/pretrain.py:runlocal}
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS" JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} \
    .venv/bin/python -m bertjax.pretrain --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.mode=explicit --config.distributed.coordinator_address="127.0.0.1:$PORT" \
    --config.distributed.num_processes="$NUM_PROCESSES" --config.distributed.process_id="$i" "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
