"""Helpers shared by the experiment configs: argument parsing, the training sections, the CPU-test shrink."""

import ml_collections

from t2i_jax import config_keys
from t2i_jax.train import families

# Text contexts for captioned shapes: the longest caption the templates make is 18 tokens with its end
# token ("a picture of a small red plus sign to the left of a small red plus sign"); 16 cut the second
# object's name off most two-object captions (tests/data/test_tokenizer.py checks the bound).
SHAPES_CONTEXT = 20

def parse_arg(arg, allowed=("runlocal",)):
  """The config argument as a set of flags; raises a ValueError on an unknown one."""
  flags = set(filter(None, (arg or "").split(",")))
  unknown = sorted(flags - set(allowed))
  if unknown:
    raise ValueError(f"config argument(s) {unknown} not understood; this config accepts {sorted(allowed)}.")
  return flags


# Each section is complete: every key with its default (t2i_jax/config_keys.py) unless given here.
def diffusion(**values) -> ml_collections.ConfigDict:
  """The diffusion section: Improved DDPM's hybrid-loss setup unless overridden."""
  return config_keys.section("diffusion", **values)


def data(name: str, image_size: int, **values) -> ml_collections.ConfigDict:
  """The data section (input_pipeline.make_source)."""
  return config_keys.section("data", name=name, image_size=image_size, **values)


def optim(lr: float, **values) -> ml_collections.ConfigDict:
  """The optim section (state.make_optimizer)."""
  return config_keys.section("optim", lr=lr, **values)


def train(batch_size: int, num_steps: int, **values) -> ml_collections.ConfigDict:
  """The train section (loop.train)."""
  return config_keys.section("train", batch_size=batch_size, num_steps=num_steps, **values)


def sample(**values) -> ml_collections.ConfigDict:
  """The sample section (--mode=sample and the loop's periodic samples)."""
  return config_keys.section("sample", **values)


def evaluation(**values) -> ml_collections.ConfigDict:
  """The eval section (--mode=eval: the prompt set and sampler settings)."""
  return config_keys.section("eval", **values)


def section(name: str, **values) -> ml_collections.ConfigDict:
  """Any other section of config_keys.DEFAULTS (prior, decoder, low_res, a chain's section, ...)."""
  return config_keys.section(name, **values)


def shrink_for_cpu(config: ml_collections.ConfigDict, image_size: int = 16) -> None:
  """`:runlocal`: the same model family at a size that trains two steps on a CPU in seconds (the U-Nets
  and the noisy classifier shrink as their family says; the other families' configs set their own size).

  The data become captioned shapes rendered on the fly (nothing to prepare or
  download), with the shapes tokenizer for text models and the first object's
  shape as the class label for class-conditional ones.
  """
  config.model.update(families.of(config).runlocal_model(config.model, image_size))
  if config.model.get("text") is not None:
    config.model.text.update(dict(context_length=SHAPES_CONTEXT, width=32, layers=1, heads=2, vocab_size=64))
  if config.get("diffusion") is not None:
    config.diffusion.num_timesteps = 100
  config.data = data("shapes_rendered", image_size, num_train=64, tokenizer="shapes", context_length=SHAPES_CONTEXT,
                     label_key="shapes")
  config.optim.update(dict(warmup_steps=1, total_steps=2))
  config.train.update(dict(batch_size=8, num_steps=2, log_every=1, checkpoint_every=2, grad_accum_steps=1))
  if config.get("sample") is not None:
    config.sample.update(dict(steps=5, num_images=2, prompts=("a large red circle in the center",
                                                               "a small blue square at the top left")))
