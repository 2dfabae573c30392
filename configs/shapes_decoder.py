"""unCLIP's decoder on captioned shapes: a text U-Net also conditioned on a frozen CLIP's image embedding.

The U-Net and recipe of configs/shapes_default.py at its 24 px, plus the CLIP image embedding of each
render (the frozen CLIP of configs/shapes_clip.py, computed on the devices in the loop) projected into
the timestep embedding and into 4 extra attention tokens (unCLIP §2.1). The embedding is dropped 50% of
the time and the caption 20%, independently, for classifier-free guidance (both: 10%).

  python -m t2i_jax.main --config=configs/shapes_decoder.py --workdir=runs/unclip/decoder \
      --config.decoder.clip_workdir=runs/unclip/clip
  python -m t2i_jax.main --config=configs/shapes_decoder.py:runlocal --workdir=/tmp/shapes_decoder \
      --config.decoder.clip_workdir=/tmp/shapes_clip
"""

from configs import common, shapes_clip, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = shapes_default.get_config()
  config.decoder = common.section("decoder", clip_workdir="runs/unclip/clip")
  # The default's U-Net at its 24 px, the CLIP's size, plus the CLIP image embedding.
  config.model.update(dict(clip_dim=shapes_clip.get_config().model.embed_dim, clip_tokens=4))
  # The caption is dropped 20% (as the default drops it), not unCLIP's 50%, and the embedding 50%, not 10%:
  # a decoder that always has the embedding leans on it and learns the caption's shapes and sizes late
  # (seed 0: 72.0% of captions at the paper's rates, 77.5% at 20% / 20%, 86.0% at these; unclip_vs_glide).
  config.decoder.update(dict(p_drop_clip=0.5, p_drop_text=0.2))
  config.diffusion.p_uncond = 0.0  # replaced by decoder.p_drop_clip / p_drop_text
  config.sample.prompts = config.sample.prompts[:4]
  # The default's 4,400 steps of batch 16.
  config.train.update(dict(num_steps=4400, checkpoint_every=1100, sample_every=4400))
  if "runlocal" in flags:
    shapes_default.runlocal(config)
    config.model.update(dict(clip_dim=16, attention_resolutions=(8,)))  # at the 16 px of the runlocal CLIP
    config.decoder.clip_workdir = "/tmp/shapes_clip"
  return config
