"""Every model family, in one registry: the trainer, the CLI, eval and the pipelines ask it.

    family = families.get(config.model.name)   # a base.Family
    task = families.make_task(config, workdir)  # its model, loss and batch preparation
    tokenizer = families.tokenizer_for(config)  # or None for a model that reads no text

A new family is its module here (a base.Family) and one line of FAMILIES; its model is one line of
models.MODELS.
"""

from typing import Optional

from t2i_jax import models
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.train.families import autoencoder, base, classifier, clip, dalle, prior, unet
from t2i_jax.train.families.base import Family, Task, build_schedule  # noqa: F401  (the protocol's names)

FAMILIES = {family.name: family for family in (
    unet.FAMILY, classifier.FAMILY, clip.FAMILY, prior.FAMILY, autoencoder.KL, autoencoder.VQ, autoencoder.DVAE,
    dalle.FAMILY)}


def get(name) -> base.Family:
  """The family of config.model.name; a one-line ValueError naming the known ones otherwise."""
  if name not in FAMILIES:
    raise ValueError(f"model.name={name!r} is not a model family; use one of {', '.join(map(repr, FAMILIES))}.")
  return FAMILIES[name]


def of(config) -> base.Family:
  """The family of a config's model section."""
  return get(config.model.get("name"))


def make_task(config, workdir: Optional[str] = None) -> base.Task:
  """The Task of config's family; workdir: the run's, read by a latent U-Net for the frozen models a resumed
  run trains on (nothing is written)."""
  family = of(config)
  return family.task(config, models.build(config.model), workdir)


def tokenizer_for(config):
  """The tokenizer of config.data.tokenizer if the config's model reads captions, else None."""
  if of(config).reads_text(config.model):
    return tokenizer_lib.load_tokenizer(config.data.tokenizer)
  return None
