#!/bin/bash
# EDM2's post-hoc EMA sweep on one run: reconstruct each EMA length from the run's snapshots, then score heun:10:3
# on 200 one-object prompts. Usage: experiments/edm/posthoc_sweep.sh CONFIG WORKDIR [more --config flags]
set -euo pipefail
config=$1; workdir=$2; shift 2
for sigma_rel in 0.03 0.05 0.08 0.10 0.15 0.20; do
  .venv/bin/python -m t2i_jax.main --config="$config" --workdir="$workdir" --mode=posthoc_ema --sigma_rel=$sigma_rel
  out="$workdir/posthoc_ema/sigma_rel_$(printf %.3f $sigma_rel)"
  .venv/bin/python -m t2i_jax.main --config="$config" --workdir="$out" --mode=eval \
      --config.eval.num_heldout=0 --config.eval.num_pair=0 --config.eval.num_diverse=0 --eval_setting=heun:10:3 "$@"
done
