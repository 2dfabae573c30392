#!/usr/bin/env bash
# The accelerator benchmark: train steps (images/s, MFU), the PyTorch originals beside them, sampling
# seconds per image, compile times and peak memory; writes benchmarks/results/<device>.json and .md.
# Budget: under 8 minutes on one GPU (the timeout below stops it at 7.5).
#
#   bash benchmarks/device.sh               # on the GPU or TPU machine, from the repo root's .venv
#   bash benchmarks/device.sh --dry-run     # any machine (CPU too): :runlocal sizes, figures meaningless
#   bash benchmarks/device.sh --only train  # train,torch,sample: a subset
#
# See benchmarks/device_bench.py for what each case is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 450 "$PY" benchmarks/device_bench.py "$@"
