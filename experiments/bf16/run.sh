#!/bin/bash
# bfloat16 activations against float32 on the shapes default: 500 steps, training seeds 0-2 each, the loss
# logged every 10 steps. Usage: experiments/bf16/run.sh [ROOT=runs/bf16]
set -euo pipefail
root=${1:-runs/bf16}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
for dtype in float32 bfloat16; do
  for seed in 0 1 2; do
    .venv/bin/python -m t2i_jax.main --config=configs/shapes_default.py --workdir="$root/${dtype}_s$seed" \
        --config.seed=$seed --config.model.dtype=$dtype --config.train.num_steps=500 --config.train.log_every=10 \
        --config.train.sample_every=0 --config.train.checkpoint_every=500
  done
done
.venv/bin/python experiments/bf16/summarize.py "$root"
