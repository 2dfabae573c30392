"""A small CLIP on captioned shapes: the image and text towers unCLIP's prior and decoder build on.

ViT 4×4 patches on 32×32 renders and a causal text tower over the shapes
tokenizer, trained with the symmetric contrastive loss on the global batch.

  python -m t2i_jax.main --config=configs/shapes_clip.py --workdir=runs/shapes_clip
  python -m t2i_jax.main --config=configs/shapes_clip.py:runlocal --workdir=/tmp/shapes_clip
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.fsdp = 1
  config.model = ml_collections.ConfigDict(dict(
      name="clip", image_size=32, patch_size=4, vision_width=128, vision_layers=4, vision_heads=4, text_ctx=16,
      vocab_size=64, text_width=128, text_layers=4, text_heads=4, embed_dim=64, dtype="float32", remat=False,
  ))
  config.data = common.data("shapes", 32, num_train=50_000, tokenizer="shapes", context_length=16)
  config.optim = common.optim(5e-4, warmup_steps=500, schedule="cosine", total_steps=20_000, weight_decay=0.1,
                              b2=0.98)
  config.train = common.train(256, 20_000, ema_rate=0.999, ema_warmup=True, checkpoint_every=2000)
  if "runlocal" in flags:
    config.model.update(dict(image_size=16, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                             text_layers=1, text_heads=2, embed_dim=16))
    common.shrink_for_cpu(config)
  return config
