"""GLIDE's text-conditional upsampler on captioned shapes: 24 → 48 px, fed the base's samples in the cascade.

The unCLIP upsampler (configs/shapes_upsampler.py: v-prediction, 2×2 patches, noise-conditioning
augmentation at levels {0, …, 300}, sampled at 100) at twice its size, reading the caption as GLIDE's
upsampler does: a small text encoder into the timestep embedding and the attention at 12 px. The
augmentation (Imagen §2.5, unCLIP §2.1) makes the base's imperfect samples look like the noised
downsampled renders it trained on; GLIDE's released sampler instead feeds the base's samples as they are
and lowers the upsampler's noise temperature (0.997).

  python -m t2i_jax.main --config=configs/shapes_glide_upsampler.py --workdir=runs/glide/upsampler
  python -m t2i_jax.main --config=configs/shapes_glide_upsampler.py:runlocal --workdir=/tmp/shapes_glide_upsampler
"""

from configs import common, shapes_upsampler


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = shapes_upsampler.get_config()
  # 48 px renders, 2× the default base's 24 px.
  config.data = common.data("shapes", 48, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.model.update(dict(image_size=48, attention_resolutions=(12,), num_head_channels=32,
                           text=dict(vocab_size=64, context_length=common.SHAPES_CONTEXT, width=64, layers=1, heads=2, final_ln=True,
                                     padding_embedding=True, pool="bow", position_init_std=0.01, pool_dropout=0.0)))
  config.diffusion.p_uncond = 0.1  # a null caption, so the cascade can also guide it
  # 1,500 steps (about 15 CPU minutes), sampled from its upsampled input noised to t = 200
  # (configs/shapes_glide.py): the cascade keeps 98.4% of the base's captions on seed 0. From noise it needs
  # three times the steps to keep 93% (experiments/glide_cascade).
  config.train.update(dict(num_steps=1500, checkpoint_every=500, sample_every=1500))
  if "runlocal" in flags:
    common.shrink_for_cpu(config, image_size=32)  # from the runlocal base's 16 px
    config.low_res.update(dict(noise_aug_max=30, noise_aug_sample=10))  # of the 100 runlocal timesteps
  return config
