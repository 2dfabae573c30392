"""Latent diffusion on captioned shapes as one program: prompt → CLIP token states → latent U-Net → decoder.

It trains nothing: it names the latent U-Net's workdir and the frozen autoencoder and CLIP it must have
been trained on (configs/shapes_latent.py has the training commands):

  python -m t2i_jax.main --config=configs/shapes_latent_chain.py --workdir=runs/latent --mode=sample \
      --prompt="a small red circle left of a large blue square"
  python -m t2i_jax.main --config=configs/shapes_latent_chain.py --workdir=runs/latent --mode=eval
"""

import ml_collections

from configs import common, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0))
  # The pixel-space default's headline sampler.
  config.latent = common.section("latent", unet_workdir="runs/latent/unet",
                                 autoencoder_workdir="runs/latent/autoencoder", clip_workdir="runs/latent/clip",
                                 sampler="dpm++2m:20:3", prompts=shapes_default.PROMPTS[:4], num_images=4)
  config.eval = common.evaluation(settings=("dpm++2m:20:3",))
  if "runlocal" in flags:
    config.latent.update(dict(unet_workdir="/tmp/shapes_latent", autoencoder_workdir="/tmp/shapes_autoencoder",
                              clip_workdir="/tmp/shapes_clip", sampler="ddim:3:3", num_images=2))
    config.eval.update(dict(num_single=4, num_heldout=2, num_pair=2, batch_size=2, settings=("ddim:3:3",),
                            num_diverse=2, diverse_samples=2))
  return config
