"""DALL·E 1's transformer on captioned shapes: [caption ; 12×12 image codes] modelled autoregressively.

The image tokenizer is frozen: DALL·E's discrete VAE (configs/shapes_dvae.py), or with `:vq` the VQ
autoencoder of configs/shapes_autoencoder.py:vq; both make 12×12 codes of a 256-entry codebook from 24 px.
The transformer reads the caption's 20 tokens, then the codes in row-major order (164 positions). Sample and
score it through configs/shapes_dalle_chain.py. The recipe is not yet measured on shapes (issue 35).

  python -m t2i_jax.main --config=configs/shapes_dvae.py --workdir=runs/dalle/dvae
  python -m t2i_jax.main --config=configs/shapes_dalle.py --workdir=runs/dalle/transformer
  python -m t2i_jax.main --config=configs/shapes_autoencoder.py:vq --workdir=runs/dalle/vq
  python -m t2i_jax.main --config=configs/shapes_dalle.py:vq --workdir=runs/dalle/transformer_vq
  python -m t2i_jax.main --config=configs/shapes_dalle.py:runlocal --workdir=/tmp/shapes_dalle

`:sparse` uses DALL·E's sparse attention masks (models/dalle.attention_mask) instead of full causal attention.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg, allowed=("runlocal", "vq", "sparse"))
  runlocal = "runlocal" in flags
  config = ml_collections.ConfigDict(dict(seed=0, fsdp=1))
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT,
                            cache_in_memory=True)
  config.model = ml_collections.ConfigDict(dict(
      name="dalle", text_vocab=64, text_len=common.SHAPES_CONTEXT, image_vocab=256, image_side=12, width=128,
      layers=4, heads=4, dropout=0.0, dtype="float32"))
  if "sparse" in flags:
    # DALL·E's factorised attention: row and column masks alternating, a convolutional one last (unmeasured).
    config.model.update(dict(attention=("row", "column", "row", "conv"), conv_kernel=5))
  # DALL·E's text term weight 1/8; 10% dropped captions for super-conditioning (dalle-mini's rate).
  tokenizer = "runs/dalle/vq" if "vq" in flags else "runs/dalle/dvae"
  config.transformer = common.section("transformer", tokenizer_workdir=tokenizer,
                                      text_loss_weight=0.125, p_drop_text=0.1)
  config.optim = common.optim(3e-4, warmup_steps=200, schedule="cosine", total_steps=4000, weight_decay=0.01,
                              b2=0.95)
  config.train = common.train(32, 4000, log_every=100, checkpoint_every=1000, ema_rate=0.999, ema_warmup=True)
  if runlocal:
    common.shrink_for_cpu(config)
    # The runlocal tokenizers (shapes_dvae, shapes_autoencoder:vq): 16 px → 8×8 codes.
    config.model.update(dict(image_side=8, width=32, layers=1, heads=2))
    if "sparse" in flags:
      config.model.update(dict(layers=2, attention=("row", "conv")))
    config.transformer.tokenizer_workdir = "/tmp/shapes_vq" if "vq" in flags else "/tmp/shapes_dvae"
  return config
