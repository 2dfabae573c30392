"""Latent diffusion's first stage on captioned shapes: a KL autoencoder, 24 px renders → 12×12×4 latents (f = 2).

latent-diffusion's Encoder/Decoder (models/autoencoder.py) at CPU size; `:vq` swaps the KL posterior for a
256-entry codebook trained by its loss; `:gan` (with either) adds VQGAN's patch discriminator and adversarial
term from the run's midpoint (unmeasured on shapes). Measured: 3,000 steps (35 minutes at ~46 images/s
on a 2-core CPU), PSNR 41.1 dB, the oracle reads 98.2% of what it reads in the renders (the issue's bar:
98%), FID 19; at 2,000 steps (experiments/latent_vs_pixel's checkpoint) 38.3 dB, 96.5%, scale 0.514.

  python -m t2i_jax.main --config=configs/shapes_autoencoder.py --workdir=runs/latent/autoencoder
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py --workdir=runs/latent/autoencoder --mode=eval
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py:vq --workdir=runs/autoencoder_vq
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py:gan --workdir=runs/autoencoder_gan
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py:runlocal --workdir=/tmp/shapes_autoencoder
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg, allowed=("runlocal", "vq", "gan"))
  config = ml_collections.ConfigDict(dict(seed=0, fsdp=1))
  # 24 px: the size of the pixel-space default (configs/shapes_default.py), which latent diffusion is compared to.
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.model = ml_collections.ConfigDict(dict(
      # f = 2: at f = 4 (ch_mult (1, 2, 2)) the oracle read 41% of 1,000-step reconstructions, small shapes
      # blurred to dots (experiments/latent_vs_pixel/HISTORY.md).
      name="autoencoder_kl", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
      embed_dim=4, resolution=24, dropout=0.0, dtype="float32"))
  config.autoencoder = common.section("autoencoder", reconstruction="l1", kl_weight=1e-6)  # LDM's KL models'
  config.optim = common.optim(1e-3, warmup_steps=100, b2=0.99)
  config.train = common.train(32, 3000, log_every=100, checkpoint_every=500, ema_rate=0.999, ema_warmup=True)
  if "vq" in flags:
    # LDM's VQ models keep the latent un-quantised for the diffusion model and quantise in the decoder.
    config.model.update(dict(name="autoencoder_vq", n_embed=256, beta=0.25, ema=False))
  if "gan" in flags:
    # Unmeasured on shapes. Two layers: 4×4 logits on a 24 px image, each reaching 34 px (three would leave
    # 1×1). disc_weight 0.8 is taming's VQGAN's; it starts at half the run, once reconstructions have taken shape.
    config.model.update(dict(disc_layers=2, disc_channels=64))
    config.autoencoder.update(dict(disc_weight=0.8, disc_start=1000))
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
    config.model.update(dict(ch=32, ch_mult=(1, 2), resolution=16))
    config.eval = common.evaluation(num_single=16, num_heldout=8, num_pair=8)  # 32 reconstructions
    if "gan" in flags:  # off at the first step, on at the second: both sides of disc_start
      config.model.disc_channels = 16
      config.autoencoder.disc_start = 1
  return config
