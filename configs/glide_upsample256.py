"""GLIDE's text-conditional 64→256 upsampler (Nichol et al., 2022; the released filtered model).

398,361,286 parameters: ADM with channel multipliers 1,1,2,2,4,4 and 2 res blocks, the GLIDE
text transformer, and the low-resolution image (the 256 image box-downsampled 4×)
upsampled and concatenated to x_t. Batch 512 for 1.6M steps in the paper.

  python -m t2i_jax.main --config=configs/glide_upsample256.py --workdir=runs/glide_upsample256
  python -m t2i_jax.main --config=configs/glide_upsample256.py:runlocal --workdir=/tmp/glide_upsample256
"""

import ml_collections

from configs import common
from configs.glide_base64 import GLIDE_TEXT


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.fsdp = 1
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=256, in_channels=3, out_channels=3, learn_sigma=True, model_channels=192,
      num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4), attention_resolutions=(32, 16, 8), num_head_channels=64,
      dropout=0.1, use_scale_shift_norm=True, resblock_updown=True, text=dict(GLIDE_TEXT), super_res=True,
      dtype="float32", remat=False,
  ))
  config.diffusion = common.diffusion(schedule="linear", p_uncond=0.2)
  config.data = common.data("coco_captions", 256, random_crop=True, tokenizer="gpt2", context_length=128)
  config.optim = common.optim(1e-4)
  config.train = common.train(512, 1_600_000)
  config.sample = common.sample(steps=27, num_images=4)
  if "runlocal" in flags:
    common.shrink_for_cpu(config)  # 16 px from a 4 px low-resolution image
  return config
