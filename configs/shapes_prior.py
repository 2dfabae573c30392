"""The unCLIP diffusion prior on captioned shapes: caption → CLIP image embedding (Ramesh et al., 2022).

Reads a trained CLIP from prior.clip_workdir (configs/shapes_clip.py), whose
frozen towers embed each batch; the prior predicts the unnoised image embedding
(x0, MSE) from the text embedding and per-token text states, with 10% of the
captions replaced by the learned null text for classifier-free guidance. About 3
minutes on a 2-core CPU (experiments/unclip_vs_glide).

  python -m t2i_jax.main --config=configs/shapes_clip.py --workdir=runs/unclip/clip
  python -m t2i_jax.main --config=configs/shapes_prior.py --workdir=runs/unclip/prior
  python -m t2i_jax.main --config=configs/shapes_prior.py:runlocal --workdir=/tmp/shapes_prior
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.fsdp = 1
  config.prior = ml_collections.ConfigDict(dict(clip_workdir="runs/unclip/clip"))
  config.model = ml_collections.ConfigDict(dict(
      name="prior", clip_dim=32, width=128, layers=4, heads=4, text_ctx=common.SHAPES_CONTEXT, text_dim=64, dropout=0.0,
      dtype="float32", remat=False,
  ))
  config.diffusion = common.diffusion(mean_type="x0", var_type="fixed_small", loss_type="mse", p_uncond=0.1)
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT,
                            cache_in_memory=True)
  config.optim = common.optim(1e-3, warmup_steps=50, weight_decay=0.01)
  config.train = common.train(128, 400, log_every=50, ema_rate=0.99, ema_warmup=True, checkpoint_every=200)
  if "runlocal" in flags:
    config.model.update(dict(clip_dim=16, width=32, layers=1, heads=2, text_dim=32))
    config.prior.clip_workdir = "/tmp/shapes_clip"
    common.shrink_for_cpu(config)
  return config
