#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM pod slice: the same command on every worker (jax.distributed finds
# the pod by itself: distributed.mode=auto). WORKDIR must be shared by all workers (a GCS FUSE
# mount or Filestore), since orbax writes checkpoints cooperatively and every host resumes from them.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/gcs/runs/bert_base_p1 \
#   CONFIG=experiments/recipes.py:recipe=bert,size=base,phase=1 experiments/launch_tpu_vm.sh [--config.x=y ...]
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (shared by all workers)}"
CONFIG=${CONFIG:-experiments/recipes.py:recipe=bert,size=base,phase=1}
REPO=${REPO:-bertjax}  # the checkout on each worker (clone it there first, then `make venv`)
OVERRIDES=$(printf ' %q' "$@")

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO && make venv >/dev/null &&
  .venv/bin/pip install --quiet 'jax[tpu]' &&
  .venv/bin/python -m bertjax.pretrain --config=$CONFIG --workdir=$WORKDIR --config.mesh.preset=fsdp$OVERRIDES
"
