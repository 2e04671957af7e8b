#!/usr/bin/env bash
# Wheels of the pure-Python packages bertjax needs that a GPU machine's own python3 may lack
# (ml-collections, grain, array-record, portpicker, tensorboardX), downloaded here
# for that machine's Python (3.12, x86-64 Linux), since it has no network. Carry the folder and
# install it there before benchmarks/bench_gpu.sh:
#
#   benchmarks/gpu_wheels.sh [DIR]        # DIR defaults to .whl (git-ignored)
#   # on the GPU machine (the device tool: run with carry=[".whl"]):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site MORE_ROWS=" " DEADLINE=440 benchmarks/bench_gpu.sh "$OUT"
#
# (timeout_s about 500; MORE_ROWS=" " keeps to the base-256-128 bench, the levers and the cuDNN
# test, which fit 15 minutes of device time with the machine's start; a fresh machine compiles
# a BERT-base step in 30-45 s.)
#
# Versions: the lower bounds of pyproject.toml (portpicker: what the CPU runs were tested with).
set -euo pipefail
dir=${1:-.whl}
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$dir" ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 tensorboardX==2.6.5
ls "$dir"
