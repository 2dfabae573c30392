"""GLIDE's text-conditional 64→256 upsampler (Nichol et al., 2022; the released filtered model).

398,361,286 parameters: ADM with channel multipliers 1,1,2,2,4,4 and 2 res blocks, the GLIDE
text transformer, and the low-resolution image upsampled and concatenated to x_t.

  python -m t2i_jax.main --config=configs/glide_upsample256.py --workdir=runs/glide_upsample256
  python -m t2i_jax.main --config=configs/glide_upsample256.py:runlocal --workdir=/tmp/glide_upsample256
"""

import ml_collections

from configs import common
from configs.glide_base64 import GLIDE_TEXT


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=256, in_channels=3, out_channels=3, learn_sigma=True, model_channels=192,
      num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4), attention_resolutions=(32, 16, 8), num_head_channels=64,
      dropout=0.1, use_scale_shift_norm=True, resblock_updown=True, text=dict(GLIDE_TEXT), super_res=True,
      dtype="float32", remat=False,
  ))
  config.diffusion = ml_collections.ConfigDict(dict(
      schedule="linear", num_timesteps=1000, mean_type="eps", var_type="learned_range", loss_type="rescaled_mse",
  ))
  if "runlocal" in flags:
    common.shrink_for_cpu(config, image_size=32)
  return config
