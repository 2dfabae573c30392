"""Helpers shared by the experiment configs: argument parsing, the training sections, the CPU-test shrink."""

import ml_collections
from ml_collections import config_dict

# Optional values are typed placeholders (None by default) so that --config.X=... can still set them.
_STR, _INT, _FLOAT = (lambda: config_dict.placeholder(str)), (lambda: config_dict.placeholder(int)), (
    lambda: config_dict.placeholder(float))

# One level of one res block (plus attention and the middle block): every code path of the family,
# compiled in a few seconds.
RUNLOCAL_MODEL = dict(model_channels=32, num_res_blocks=1, channel_mult=(1,), num_head_channels=16, dropout=0.0)


def parse_arg(arg, allowed=("runlocal",)):
  """The config argument as a set of flags; raises a ValueError on an unknown one."""
  flags = set(filter(None, (arg or "").split(",")))
  unknown = sorted(flags - set(allowed))
  if unknown:
    raise ValueError(f"config argument(s) {unknown} not understood; this config accepts {sorted(allowed)}.")
  return flags


def diffusion(**overrides) -> ml_collections.ConfigDict:
  """The diffusion section: the improved-diffusion hybrid-loss setup unless overridden."""
  return ml_collections.ConfigDict(dict(dict(
      schedule="cosine", num_timesteps=1000, mean_type="eps", var_type="learned_range", loss_type="rescaled_mse",
      timestep_sampler="uniform", logit_mean=0.0, logit_std=1.0, logit_uniform_fraction=0.0,
      logit_tail_fraction=0.0, logit_tail_mean=4.0, logit_tail_std=0.3, early_tail_fraction=0.0, early_tail_steps=0,
      min_snr_gamma=_FLOAT(),
      p_uncond=0.0), **overrides))


def data(name: str, image_size: int, **overrides) -> ml_collections.ConfigDict:
  """The data section (input_pipeline.make_source): name, image_size, data_dir (None: TFDS's default)."""
  return ml_collections.ConfigDict(dict(dict(
      name=name, image_size=image_size, data_dir=_STR(), seed=0, num_train=50_000, random_crop=False,
      random_flip=False, tokenizer=_STR(), context_length=_INT(), label_key="label", pair_fraction=_FLOAT()),
      **overrides))


def optim(lr: float, **overrides) -> ml_collections.ConfigDict:
  """The optim section (state.make_optimizer): Adam(W) with warmup, clipping and a constant, cosine or
  warmup-stable-decay ("wsd": cooldown_steps) learning-rate schedule (state.make_lr_schedule)."""
  return ml_collections.ConfigDict(dict(dict(
      lr=lr, warmup_steps=0, schedule="constant", total_steps=0, cooldown_steps=0, weight_decay=0.0, b1=0.9, b2=0.999,
      grad_clip=1.0), **overrides))


def train(batch_size: int, num_steps: int, **overrides) -> ml_collections.ConfigDict:
  """The train section (loop.train)."""
  return ml_collections.ConfigDict(dict(dict(
      batch_size=batch_size, num_steps=num_steps, log_every=100, checkpoint_every=10_000, max_to_keep=3,
      ema_rate=0.9999, ema_warmup=False, grad_accum_steps=1, sample_every=0), **overrides))


def sample(**overrides) -> ml_collections.ConfigDict:
  """The sample section (--mode=sample and the loop's periodic samples)."""
  return ml_collections.ConfigDict(dict(dict(
      method="ddim", steps=50, guidance=1.0, eta=0.0, min_timestep=0, use_ema=True, prompts=(), num_images=8,
      labels=()),
      **overrides))


def shrink_for_cpu(config: ml_collections.ConfigDict, image_size: int = 16) -> None:
  """`:runlocal`: the same model family at a size that trains two steps on a CPU in seconds.

  The data become captioned shapes rendered on the fly (nothing to prepare or
  download), with the shapes tokenizer for text models and the first object's
  shape as the class label for class-conditional ones.
  """
  if config.model.name in ("unet", "classifier"):
    config.model.update({k: v for k, v in RUNLOCAL_MODEL.items() if k in config.model})
    config.model.image_size = image_size
    config.model.attention_resolutions = (image_size // config.model.get("patch_size", 1),)
  if config.model.get("text") is not None:
    config.model.text.update(dict(context_length=16, width=32, layers=1, heads=2, vocab_size=64))
  if config.get("diffusion") is not None:
    config.diffusion.num_timesteps = 100
  config.data = data("shapes_rendered", image_size, num_train=64, tokenizer="shapes", context_length=16,
                     label_key="shapes")
  config.optim.update(dict(warmup_steps=1, total_steps=2))
  config.train.update(dict(batch_size=8, num_steps=2, log_every=1, checkpoint_every=2, grad_accum_steps=1))
  if config.get("sample") is not None:
    config.sample.update(dict(steps=5, num_images=2, prompts=("a large red circle in the center",
                                                               "a small blue square at the top left")))
