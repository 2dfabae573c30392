"""Latent diffusion on captioned shapes: a text U-Net on the 12×12×4 latents of configs/shapes_autoencoder.py.

Stable Diffusion's design at CPU size: the frozen autoencoder's latents, scaled by its checkpoint's latent
scale, cross-attention on the token states of the frozen CLIP text tower of configs/shapes_clip.py and, as
SD 2 / SDXL, its pooled text embedding added to the timestep embedding; `:glide_text` reads the caption
through the U-Net's own GLIDE-style encoder instead. The diffusion and
sampler are the pixel-space default's (configs/shapes_default.py), which experiments/latent_vs_pixel
compares it to. Train the frozen stages first; sample and score through configs/shapes_latent_chain.py.

  python -m t2i_jax.main --config=configs/shapes_autoencoder.py --workdir=runs/latent/autoencoder
  python -m t2i_jax.main --config=configs/shapes_clip.py --workdir=runs/latent/clip
  python -m t2i_jax.main --config=configs/shapes_latent.py --workdir=runs/latent/unet
  python -m t2i_jax.main --config=configs/shapes_latent.py:runlocal --workdir=/tmp/shapes_latent
"""

from configs import common, shapes_clip, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg, allowed=("runlocal", "glide_text"))
  runlocal, glide_text = "runlocal" in flags, "glide_text" in flags
  config = shapes_default.get_config("runlocal" if runlocal else None)
  workdirs = ("/tmp/shapes_autoencoder", "/tmp/shapes_clip") if runlocal else ("runs/latent/autoencoder",
                                                                               "runs/latent/clip")
  config.latent_diffusion = common.section("latent_diffusion", autoencoder_workdir=workdirs[0],
                                           clip_workdir="" if glide_text else workdirs[1])
  text = config.model.text.to_dict()
  config.model.text = None
  # The latents, 12×12×4 (8×8×4 for the :runlocal autoencoder), in 2×2 patches: 6×6 positions, a quarter
  # of the pixel default's 12×12 (24 px in 2×2 patches); its two lower levels, attention at both.
  config.model.update(dict(image_size=8 if runlocal else 12, in_channels=4, out_channels=4))
  config.model.update(dict(attention_resolutions=(4,)) if runlocal else dict(channel_mult=(1, 1),
                                                                              attention_resolutions=(6, 3)))
  if glide_text:
    config.model.text = text
  else:
    clip = shapes_clip.get_config("runlocal" if runlocal else None).model
    # SD-2/SDXL: the CLIP's token states for cross-attention and its pooled text embedding on the timestep
    # embedding, which carries the caption's position (the CLIP's zero-shot position is 100%).
    config.model.update(dict(context_dim=clip.text_width, pooled_dim=clip.embed_dim))
  if not runlocal:
    # The default's training compute: its 4,400 steps at 2.2× (:glide_text 1.87×) its images/s
    # (benchmarks/latent_vs_pixel.py).
    config.train.num_steps = 8230 if glide_text else 9680
  config.sample.threshold = "none"  # latents are not bounded by [-1, 1]
  config.train.sample_every = 0  # samples come from the chain config, which decodes the latents
  return config
