#!/bin/bash
# Caption accuracy and FID against function evaluations (5 to 50) for Euler, Heun and DPM-Solver++(2M), guidance 3,
# on 100 one-object prompts (as experiments/shapes_sampler_sweep).
# Usage: experiments/edm/sweep.sh CONFIG WORKDIR [more --eval_setting or --config flags]
# Heun's N steps cost 2N − 1 evaluations: heun:3 = 5, heun:6 = 11, heun:10 = 19, heun:25 = 49.
set -euo pipefail
config=$1; workdir=$2; shift 2
.venv/bin/python -m t2i_jax.main --config="$config" --workdir="$workdir" --mode=eval \
    --config.eval.num_single=100 --config.eval.num_heldout=0 --config.eval.num_pair=0 --config.eval.num_diverse=0 \
    --eval_setting=euler:5:3 --eval_setting=euler:10:3 --eval_setting=euler:20:3 --eval_setting=euler:50:3 \
    --eval_setting=heun:3:3 --eval_setting=heun:6:3 --eval_setting=heun:10:3 --eval_setting=heun:25:3 \
    --eval_setting=dpm++2m:5:3 --eval_setting=dpm++2m:10:3 --eval_setting=dpm++2m:20:3 --eval_setting=dpm++2m:50:3 \
    "$@"
cp "$workdir/metrics.json" "$workdir/metrics_sweep.json"
cp "$workdir/eval_table.md" "$workdir/eval_table_sweep.md"
