#!/bin/bash
# The unCLIP chain against the GLIDE-style default on one training seed: each stage trained from the
# CLI (wall seconds logged to runs/unclip_vs_glide/times.tsv), the CLIP judged on its own, then both
# sides scored by --mode=eval with the same prompts, oracle and decoder / base sampler (DPM++ 20 steps,
# guidance 3). Convolutions go to Eigen on both sides (the README's note on XLA:CPU's YNNPACK).
#   bash experiments/unclip_vs_glide/run.sh SEED [chain|glide|both] [upsampler]
set -euo pipefail
seed=${1:?seed}; which=${2:-both}; upsampler=${3:-}
root=runs/unclip_vs_glide; mkdir -p $root
export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
M=".venv/bin/python -m t2i_jax.main"
timed() {  # name command...: runs the command, appends its wall seconds to times.tsv
  local start=$(date +%s); "${@:2}"; echo -e "$seed\t$1\t$(( $(date +%s) - start ))" >> $root/times.tsv
}
chain=$root/unclip_s$seed
if [[ $which != glide ]]; then
  timed clip $M --config=configs/shapes_clip.py --workdir=$chain/clip --config.seed=$seed
  $M --config=configs/shapes_clip.py --workdir=$chain/clip --mode=eval
  timed prior $M --config=configs/shapes_prior.py --workdir=$chain/prior --config.seed=$seed \
      --config.prior.clip_workdir=$chain/clip
  timed decoder $M --config=configs/shapes_decoder.py --workdir=$chain/decoder --config.seed=$seed \
      --config.decoder.clip_workdir=$chain/clip
  stages="--config.unclip.clip_workdir=$chain/clip --config.unclip.prior_workdir=$chain/prior"
  stages+=" --config.unclip.decoder_workdir=$chain/decoder"
  if [[ -n $upsampler ]]; then
    timed upsampler $M --config=configs/shapes_upsampler.py --workdir=$chain/upsampler --config.seed=$seed
    stages+=" --config.unclip.upsampler_workdir=$chain/upsampler"
  else
    stages+=" --config.unclip.upsampler_workdir="
  fi
  timed chain_eval $M --config=configs/shapes_unclip.py --workdir=$chain --mode=eval $stages
  $M --config=configs/shapes_unclip.py --workdir=$chain --mode=sample $stages
fi
if [[ $which != chain ]]; then
  glide=$root/glide_s$seed
  timed glide $M --config=configs/shapes_default.py --workdir=$glide --config.seed=$seed
  timed glide_eval $M --config=configs/shapes_default.py --workdir=$glide --mode=eval --eval_setting=dpm++2m:20:3
  $M --config=configs/shapes_default.py --workdir=$glide --mode=sample
fi
