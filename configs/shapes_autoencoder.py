"""Latent diffusion's first stage on captioned shapes: a KL autoencoder, 32 px renders → 8×8×4 latents (f = 4).

latent-diffusion's Encoder/Decoder (models/autoencoder.py) at CPU size; `:vq` swaps the KL posterior for a
256-entry codebook trained by its loss. The recipe (sizes, steps) is a first one, not yet measured against
the oracle (issue 25).

  python -m t2i_jax.main --config=configs/shapes_autoencoder.py --workdir=runs/autoencoder
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py:vq --workdir=runs/autoencoder_vq
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py:runlocal --workdir=/tmp/shapes_autoencoder
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg, allowed=("runlocal", "vq"))
  config = ml_collections.ConfigDict(dict(seed=0, fsdp=1))
  config.data = common.data("shapes", 32, num_train=50_000, tokenizer="shapes", context_length=16)
  config.model = ml_collections.ConfigDict(dict(
      name="autoencoder_kl", ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
      embed_dim=4, resolution=32, dropout=0.0, dtype="float32"))
  config.autoencoder = common.section("autoencoder", reconstruction="l1", kl_weight=1e-6)  # LDM's KL models'
  config.optim = common.optim(1e-3, warmup_steps=100, b2=0.99)
  config.train = common.train(32, 2000, log_every=100, checkpoint_every=500, ema_rate=0.999, ema_warmup=True)
  if "vq" in flags:
    # LDM's VQ models keep the latent un-quantised for the diffusion model and quantise in the decoder.
    config.model.update(dict(name="autoencoder_vq", n_embed=256, beta=0.25, ema=False))
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
    config.model.update(dict(ch=32, ch_mult=(1, 2), resolution=16))
  return config
