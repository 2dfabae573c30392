"""GLIDE's base text-conditional 64×64 model (Nichol et al., 2022; the released filtered model).

385,030,726 parameters: the ADM U-Net plus a 16-layer, 512-wide text transformer over 128
tokens of the 50,257-token GLIDE BPE, with a learned per-position padding embedding.

  python -m t2i_jax.main --config=configs/glide_base64.py --workdir=runs/glide_base64
  python -m t2i_jax.main --config=configs/glide_base64.py:runlocal --workdir=/tmp/glide_base64
"""

import ml_collections

from configs import common

GLIDE_TEXT = dict(vocab_size=50257, context_length=128, width=512, layers=16, heads=8, final_ln=True,
                  padding_embedding=True)


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=64, in_channels=3, out_channels=3, learn_sigma=True, model_channels=192,
      num_res_blocks=3, channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8), num_head_channels=64,
      dropout=0.1, use_scale_shift_norm=True, resblock_updown=True, text=dict(GLIDE_TEXT), dtype="float32",
      remat=False,
  ))
  config.diffusion = ml_collections.ConfigDict(dict(
      schedule="cosine", num_timesteps=1000, mean_type="eps", var_type="learned_range", loss_type="rescaled_mse",
  ))
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
  return config
