"""DALL·E's discrete VAE on captioned shapes: 24 px renders → 12×12 codes of a 256-entry codebook.

The encoder and decoder are latent-diffusion's at the size of configs/shapes_autoencoder.py (f = 2, the same
grid as its `:vq` tokenizer), the codes gumbel-softmax-relaxed in training, the pixels under a logit-Laplace
likelihood (models/dvae.py, train/dvae_loss.py). β and the temperature follow the paper's schedules scaled to
this run: β → 6.6 over the first sixth of it (the paper: 5,000 of its ~3M updates were the warm-up, but a
3,000-step run that kept β at 0 for 5,000 steps would never regularise), τ → 1/16 by its last sixth. The
recipe is not yet measured on shapes (issue 35).

  python -m t2i_jax.main --config=configs/shapes_dvae.py --workdir=runs/dalle/dvae
  python -m t2i_jax.main --config=configs/shapes_dvae.py --workdir=runs/dalle/dvae --mode=eval
  python -m t2i_jax.main --config=configs/shapes_dvae.py:runlocal --workdir=/tmp/shapes_dvae
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0, fsdp=1))
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.model = ml_collections.ConfigDict(dict(
      name="dvae", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=32, embed_dim=32,
      n_embed=256, resolution=24, out_channels=6, dropout=0.0, dtype="float32"))
  config.dvae = common.section("dvae", kl_weight=6.6, kl_warmup_steps=500, temperature_end=1.0 / 16.0,
                               temperature_steps=2500)
  config.optim = common.optim(1e-3, warmup_steps=100, b2=0.99)
  config.train = common.train(32, 3000, log_every=100, checkpoint_every=500, ema_rate=0.999, ema_warmup=True)
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
    config.model.update(dict(ch=32, ch_mult=(1, 2), resolution=16))  # 8×8 codes, as shapes_dalle:runlocal reads
    config.dvae.update(dict(kl_warmup_steps=1, temperature_steps=1))  # both schedules end at step 2
    config.eval = common.evaluation(num_single=16, num_heldout=8, num_pair=8)  # 32 reconstructions
  return config
