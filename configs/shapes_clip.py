"""A small CLIP on captioned shapes: the image and text towers unCLIP's prior and decoder build on.

ViT 4×4 patches on 32×32 renders and a causal text tower over the shapes
tokenizer, trained with the symmetric contrastive loss on the global batch. Sized for the
unCLIP chain's CPU budget (experiments/unclip_vs_glide): about 2.5 minutes on a 2-core CPU.

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
      name="clip", image_size=32, patch_size=4, vision_width=64, vision_layers=2, vision_heads=2, text_ctx=common.SHAPES_CONTEXT,
      vocab_size=64, text_width=64, text_layers=2, text_heads=2, embed_dim=32, dtype="float32", remat=False,
  ))
  config.data = common.data("shapes", 32, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.optim = common.optim(1e-3, warmup_steps=50, schedule="cosine", total_steps=400, weight_decay=0.1,
                              b2=0.98)
  config.train = common.train(128, 400, log_every=50, ema_rate=0.99, ema_warmup=True, checkpoint_every=200)
  if "runlocal" in flags:
    config.model.update(dict(image_size=16, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                             text_layers=1, text_heads=2, embed_dim=16))
    common.shrink_for_cpu(config)
  return config
