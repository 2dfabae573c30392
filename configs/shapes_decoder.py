"""unCLIP's decoder on captioned shapes: a text U-Net also conditioned on a frozen CLIP's image embedding.

The U-Net of configs/shapes_default.py at 16 px, its CLIP image embedding (of the 32 px render, by the
frozen CLIP of configs/shapes_clip.py, computed on the devices in the loop) projected into the timestep
embedding and into 4 extra attention tokens; the embedding is dropped 10% of the time and the caption 50%
(unCLIP's rates), independently, for classifier-free guidance. configs/shapes_upsampler.py takes it to 32 px.

  python -m t2i_jax.main --config=configs/shapes_decoder.py --workdir=runs/unclip/decoder \
      --config.decoder.clip_workdir=runs/unclip/clip
  python -m t2i_jax.main --config=configs/shapes_decoder.py:runlocal --workdir=/tmp/shapes_decoder \
      --config.decoder.clip_workdir=/tmp/shapes_clip
"""

from configs import common, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = shapes_default.get_config()
  # The CLIP's 32 px renders; the U-Net reads them box-downsampled to 16 px (the upsampler's low_res).
  config.data = common.data("shapes", 32, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.decoder = common.section("decoder", clip_workdir="runs/unclip/clip")
  config.model.update(dict(
      image_size=16, clip_dim=32, clip_tokens=4,
      # 2×2 patches as the default: 8, 4 and 2 px feature maps; 2.4x the images/s of no patches.
      patch_size=2, attention_resolutions=(4, 2)))
  config.diffusion.p_uncond = 0.0  # replaced by decoder.p_drop_clip / p_drop_text
  config.sample.prompts = config.sample.prompts[:4]
  # About 4.5 minutes on a 2-core CPU, the chain's share (experiments/unclip_vs_glide).
  config.train.update(dict(num_steps=1500, checkpoint_every=500, sample_every=1500))
  if "runlocal" in flags:
    shapes_default.runlocal(config)
    config.model.update(dict(clip_dim=16, attention_resolutions=(8,)))  # at the 16 px of the runlocal CLIP
    config.decoder.clip_workdir = "/tmp/shapes_clip"
  return config
