"""GLIDE's base text-conditional 64×64 model (Nichol et al., 2022; the released filtered model).

385,030,726 parameters: the ADM U-Net plus a 16-layer, 512-wide text transformer over 128
tokens of the 50,257-token GLIDE BPE (GPT-2's), with a learned per-position padding
embedding. Batch 2048 for 2.5M steps in the paper; 20% of captions are dropped
for classifier-free guidance. The paper gives no learning rate; 1e-4 is ours.
Trained here on COCO captions (GLIDE's own data set is not public).

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
  config.seed = 0
  config.fsdp = 1
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=64, in_channels=3, out_channels=3, learn_sigma=True, model_channels=192,
      num_res_blocks=3, channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8), num_head_channels=64,
      dropout=0.1, use_scale_shift_norm=True, resblock_updown=True, text=dict(GLIDE_TEXT), dtype="float32",
      remat=False,
  ))
  config.diffusion = common.diffusion(p_uncond=0.2)
  config.data = common.data("coco_captions", 64, random_crop=True, tokenizer="gpt2", context_length=128)
  config.optim = common.optim(1e-4, weight_decay=0.0)
  config.train = common.train(2048, 2_500_000)
  config.sample = common.sample(guidance=3.0, prompts=("an oil painting of a corgi", "a red bus in the snow"))
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
  return config
