"""unCLIP's upsampler on captioned shapes: 24 → 48 px (the decoder's size, doubled), conditioned on the
low-resolution image only.

The low-resolution input is the 48 px render box-downsampled 2×, noised in training at a level drawn
from timesteps {0, …, 300} of the cosine schedule (that level embedded like a timestep), and sampled at
level 100 — noise-conditioning augmentation, so the decoder's imperfect 24 px samples look like inputs it
was trained on (unCLIP §2.1; Imagen §2.5). No text, as unCLIP's upsamplers. Not yet part of the chain's
recipe (configs/shapes_unclip.py names no upsampler): what it keeps of the decoder's captions is open
(experiments/unclip_vs_glide).

  python -m t2i_jax.main --config=configs/shapes_upsampler.py --workdir=runs/unclip/upsampler
  python -m t2i_jax.main --config=configs/shapes_upsampler.py:runlocal --workdir=/tmp/shapes_upsampler
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0, fsdp=1))
  config.data = common.data("shapes", 48, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=48, in_channels=3, out_channels=3, learn_sigma=False, model_channels=32,
      # 2×2 patches: a 24 px network, the cost of the decoder's per image.
      num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(), dropout=0.0, patch_size=2,
      use_scale_shift_norm=True, super_res=True, noise_aug_embedding=True, dtype="float32", remat=False,
  ))
  config.low_res = common.section("low_res", factor=2, noise_aug_max=300, noise_aug_sample=100)
  # v-prediction: at high noise the loss rewards reading low_res (an eps loss barely does; 600 steps of
  # it learned to ignore low_res, experiments/unclip_vs_glide).
  config.diffusion = common.diffusion(mean_type="v", var_type="fixed_small", loss_type="mse")
  config.optim = common.optim(1e-3, warmup_steps=100, b2=0.99)
  # About 1.5 minutes on a 2-core CPU (experiments/unclip_vs_glide).
  config.train = common.train(16, 600, log_every=100, checkpoint_every=300, ema_rate=0.99, ema_warmup=True,
                              sample_every=600)
  config.sample = common.sample(method="dpm++2m", steps=10, num_images=8)
  if "runlocal" in flags:
    common.shrink_for_cpu(config, image_size=32)  # from the runlocal decoder's 16 px
    config.model.update(dict(attention_resolutions=(), patch_size=1))
    config.low_res.update(dict(noise_aug_max=30, noise_aug_sample=10))  # of the 100 runlocal timesteps
  return config
