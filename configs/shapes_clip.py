"""A small CLIP on captioned shapes: the image and text towers unCLIP's prior and decoder build on.

ViT 3×3 patches on 24×24 renders (the decoder's and the default's size) and a causal text tower over
the shapes tokenizer, trained with the symmetric contrastive loss on the global batch. `--mode=eval`
judges it: zero-shot accuracy per attribute, retrieval R@1 (t2i_jax/eval/clip_eval.py).

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
      # 8×8 patches of 3 px: 24 px with 3 px patches reads shape and position as well as 32 px with 4 px
      # ones (96.7 / 100% against 97.5 / 100% zero-shot at 2,500 steps, experiments/unclip_vs_glide).
      name="clip", image_size=24, patch_size=3, vision_width=64, vision_layers=2, vision_heads=2, text_ctx=common.SHAPES_CONTEXT,
      vocab_size=64, text_width=64, text_layers=2, text_heads=2, embed_dim=32, dtype="float32", remat=False,
  ))
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT,
                            cache_in_memory=True)
  # 2,500 steps: position is learned late (zero-shot 25% at 400 steps, 99% at 1,500) and shape last
  # (82.5, 92.1, 97.5% at 400, 1,500, 2,500 steps); the two are what the decoder must draw.
  config.optim = common.optim(1e-3, warmup_steps=50, schedule="cosine", total_steps=2500, weight_decay=0.1,
                              b2=0.98)
  config.train = common.train(128, 2500, log_every=100, ema_rate=0.99, ema_warmup=True, checkpoint_every=500)
  if "runlocal" in flags:
    config.model.update(dict(image_size=16, patch_size=4, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                             text_layers=1, text_heads=2, embed_dim=16))
    common.shrink_for_cpu(config)
  return config
