"""GLIDE's noised CLIP on captioned shapes: the image tower reads x_t, for CLIP guidance of the default.

configs/shapes_clip.py at the default base's 24 px (4×4 patches, 6×6 tokens), its image tower
timestep-conditioned (GLIDE §2.3: a learned vector per timestep in place of the class token) and trained on
x_t ~ q(x_t | x_0) at uniform timesteps of the default's diffusion schedule, so that its gradient at every
sampling step points towards the caption. Guide ancestrally (DDPM), as GLIDE did (experiments/glide_guidance).

  python -m t2i_jax.main --config=configs/shapes_noised_clip.py --workdir=runs/noised_clip
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=sample --guidance=1 \
      --sampler=ddpm --steps=25 --config.sample.clip_workdir=runs/noised_clip --config.sample.clip_scale=30
  python -m t2i_jax.main --config=configs/shapes_noised_clip.py:runlocal --workdir=/tmp/shapes_noised_clip
"""

from configs import common, shapes_clip, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = shapes_clip.get_config()
  # The schedule the guided U-Net samples: its timesteps are the CLIP's input.
  base = shapes_default.get_config().diffusion
  config.diffusion = common.diffusion(schedule=base.schedule, num_timesteps=base.num_timesteps)
  # GLIDE's noised CLIP uses exact GELU.
  config.model.update(dict(image_size=24, patch_size=4, timestep_conditioned=True, num_timesteps=base.num_timesteps,
                           activation="gelu"))
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  # Noisy images carry less of the caption per step than clean ones: twice the clean CLIP's steps.
  config.train.num_steps = 800
  config.optim.total_steps = 800
  if "runlocal" in flags:
    runlocal = shapes_clip.get_config("runlocal")
    config.model.update(dict(runlocal.model, image_size=16, timestep_conditioned=True, activation="gelu",
                             num_timesteps=100))
    common.shrink_for_cpu(config)
    config.model.image_size = 16  # the runlocal default base's size
  return config
