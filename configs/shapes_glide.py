"""GLIDE's cascade on captioned shapes: the default base text U-Net (24 px) → the text upsampler (48 px).

It trains nothing: it names the two stages' workdirs, trained first (README, "GLIDE cascade"):

  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/glide/base
  python -m t2i_jax.main --config=configs/shapes_glide_upsampler.py --workdir=runs/glide/upsampler
  python -m t2i_jax.main --config=configs/shapes_glide.py --workdir=runs/glide --mode=sample \
      --prompt="a small red circle left of a large blue square"
  python -m t2i_jax.main --config=configs/shapes_glide.py --workdir=runs/glide --mode=eval
"""

import ml_collections

from configs import common, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0))
  # The base samples as the default does; the upsampler unguided, as GLIDE's released sampler, from its
  # upsampled input noised to t = 100 rather than from noise (SDEdit): the shapes the base drew are kept
  # (96.9% of the base's captions over three seeds, against 69% from noise). Of the starts measured on all
  # three (100, 150, 200), the earliest kept the most on every seed at the same FID (experiments/glide_cascade).
  config.glide = common.section("glide", base_workdir="runs/glide/base", upsampler_workdir="runs/glide/upsampler",
                                base="dpm++2m:20:3", upsampler="dpm++2m:10:1:start=100",
                                prompts=shapes_default.PROMPTS[:4], num_images=4)
  config.eval = common.evaluation(settings=("dpm++2m:20:3",))
  if "runlocal" in flags:
    config.glide.update(dict(base_workdir="/tmp/shapes_runlocal", upsampler_workdir="/tmp/shapes_glide_upsampler",
                             base="ddim:3:3", upsampler="ddim:3:1:start=30", num_images=2))
    # Batches of num_images: the tests' eval reuses the programs their sampling compiled.
    config.eval.update(dict(num_single=4, num_heldout=2, num_pair=2, batch_size=2, settings=("ddim:3:3",),
                            num_diverse=2, diverse_samples=2))
  return config
