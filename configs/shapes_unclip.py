"""The unCLIP chain on captioned shapes: CLIP → prior → decoder → upsampler, sampled from one prompt.

It trains nothing: it names the stages' workdirs, trained in this order (README, "unCLIP"):

  python -m t2i_jax.main --config=configs/shapes_clip.py --workdir=runs/unclip/clip
  python -m t2i_jax.main --config=configs/shapes_clip.py --workdir=runs/unclip/clip --mode=eval   # judge it
  python -m t2i_jax.main --config=configs/shapes_prior.py --workdir=runs/unclip/prior
  python -m t2i_jax.main --config=configs/shapes_decoder.py --workdir=runs/unclip/decoder
  python -m t2i_jax.main --config=configs/shapes_unclip.py --workdir=runs/unclip --mode=sample \
      --prompt="a small red circle left of a large blue square"
  python -m t2i_jax.main --config=configs/shapes_unclip.py --workdir=runs/unclip --mode=sample \
      --image=a.png [--image2=b.png]            # variations of a.png, or interpolations to b.png
  python -m t2i_jax.main --config=configs/shapes_unclip.py --workdir=runs/unclip --mode=eval

An upsampler (configs/shapes_upsampler.py, 24 → 48 px) joins with
--config.unclip.upsampler_workdir=runs/unclip/upsampler; the recipe leaves it out until one keeps the
decoder's captions (experiments/unclip_vs_glide).
"""

import ml_collections

from configs import common, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0))
  config.unclip = common.section(
      "unclip", clip_workdir="runs/unclip/clip", prior_workdir="runs/unclip/prior",
      # No upsampler yet: the chain's output is the decoder's 24 px (experiments/unclip_vs_glide).
      decoder_workdir="runs/unclip/decoder", upsampler_workdir="",
      # unCLIP: 2 prior candidates re-ranked by CLIP; 25 DDIM prior steps as Karlo; the decoder as the
      # GLIDE-style default samples, guided on the caption with the embedding in both halves (three seeds:
      # 81.2% of captions against 79.5% guided on both; experiments/unclip_vs_glide).
      candidates=2, prior="ddim:25:1", decoder="dpm++2m:20:3", upsampler="dpm++2m:10:1", decoder_guides="caption",
      prompts=shapes_default.PROMPTS[:4], num_images=4)
  config.eval = common.evaluation(settings=("dpm++2m:20:3",))
  if "runlocal" in flags:
    config.unclip.update(dict(clip_workdir="/tmp/shapes_clip", prior_workdir="/tmp/shapes_prior",
                              decoder_workdir="/tmp/shapes_decoder", upsampler_workdir="/tmp/shapes_upsampler",
                              prior="ddim:3:2", decoder="ddim:3:3", upsampler="ddim:3:1", num_images=2))
    # Batches of num_images: the tests' eval reuses the programs their sampling compiled.
    config.eval.update(dict(num_single=4, num_heldout=2, num_pair=2, batch_size=2, settings=("ddim:3:3",),
                            num_diverse=2, diverse_samples=2))
  return config
