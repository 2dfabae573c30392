"""Improved DDPM on CIFAR-10 (Nichol & Dhariwal, 2021): the L_hybrid, cosine, 4000-step model.

52,546,438 parameters, as the released improved-diffusion checkpoint.

  python -m t2i_jax.main --config=configs/iddpm_cifar10.py --workdir=runs/iddpm_cifar10
  python -m t2i_jax.main --config=configs/iddpm_cifar10.py:runlocal --workdir=/tmp/iddpm_cifar10
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=32, in_channels=3, out_channels=3, learn_sigma=True, model_channels=128,
      num_res_blocks=3, channel_mult=(1, 2, 2, 2), attention_resolutions=(16, 8), num_heads=4, num_head_channels=-1,
      dropout=0.3, use_scale_shift_norm=True, resblock_updown=False, dtype="float32", remat=False,
  ))
  config.diffusion = ml_collections.ConfigDict(dict(
      schedule="cosine", num_timesteps=4000, mean_type="eps", var_type="learned_range", loss_type="rescaled_mse",
  ))
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
  return config
