"""Improved DDPM on CIFAR-10 (Nichol & Dhariwal, 2021): the L_hybrid, cosine, 4000-step model.

52,546,438 parameters, as the released improved-diffusion checkpoint; batch 128,
Adam at 1e-4, EMA 0.9999, 500k steps, random flips (the paper's CIFAR-10 setup).

  python -m t2i_jax.main --config=configs/iddpm_cifar10.py --workdir=runs/iddpm_cifar10
  python -m t2i_jax.main --config=configs/iddpm_cifar10.py:runlocal --workdir=/tmp/iddpm_cifar10
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.fsdp = 1
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=32, in_channels=3, out_channels=3, learn_sigma=True, model_channels=128,
      num_res_blocks=3, channel_mult=(1, 2, 2, 2), attention_resolutions=(16, 8), num_heads=4, num_head_channels=-1,
      dropout=0.3, use_scale_shift_norm=True, resblock_updown=False, dtype="float32", remat=False,
  ))
  config.diffusion = common.diffusion(num_timesteps=4000)
  config.data = common.data("cifar10", 32, random_flip=True)
  config.optim = common.optim(1e-4, grad_clip=0.0)
  config.train = common.train(128, 500_000)
  config.sample = common.sample(num_images=16)
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
  return config
