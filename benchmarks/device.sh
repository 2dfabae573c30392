#!/usr/bin/env bash
# The accelerator benchmark: train steps (images/s, MFU), the PyTorch originals beside them, sampling
# seconds per image, compile times and peak memory; writes benchmarks/results/<device>.json and .md.
# Budget: under 8 minutes on one GPU (the cases share a 7.5-minute deadline; each case's row is written as
# soon as it is measured, so a run the deadline stops keeps what it measured).
#
#   bash benchmarks/device.sh               # on the GPU or TPU machine, from the repo root's .venv
#   bash benchmarks/device.sh --dry-run     # any machine (CPU too): :runlocal sizes, figures meaningless
#   bash benchmarks/device.sh --only train  # train,torch,sample: a subset
#
# Each case runs in a process of its own, so that its peak device memory is its own (JAX cannot reset the
# peak within a process). See benchmarks/device_bench.py for what each case is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
deadline=$((SECONDS + 450))
append=()
while IFS= read -r case; do
  left=$((deadline - SECONDS))
  if ((left <= 0)); then echo "deadline reached before: $case" >&2; break; fi
  if timeout "$left" "$PY" benchmarks/device_bench.py --case "$case" "${append[@]}" "$@"; then
    append=(--append)  # later cases add their rows to this run's
  else
    echo "failed or stopped: $case" >&2
  fi
done < <("$PY" benchmarks/device_bench.py --list "$@")
