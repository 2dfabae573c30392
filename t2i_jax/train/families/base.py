"""The family protocol: what the trainer, the CLI and eval ask of a model family.

A family is one object (registry: families/__init__.py, keyed by config.model.name). It says
- how a config of it trains: `task(config, model, workdir)` -> Task (its loss, how a pipeline batch
  becomes the step's inputs, the frozen models run before the step);
- whether it reads captions (`reads_text`: the run gets the config's tokenizer) and that the tokenizer fits
  its text encoder (`check_text`);
- which modes its workdir supports: `evaluation` names how --mode=eval scores it (eval.evaluate's scorers),
  `check_eval` and `check_sample` refuse a config the modes cannot serve with one line that says what to do,
  `samples_in_training` whether the loop draws periodic grids;
- how its model section shrinks for a CPU test (`runlocal_model`, configs/common.shrink_for_cpu).
Nothing else in the package tests a family's name; a new family is one module here and one registry line.
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from t2i_jax.diffusion import schedules


@dataclasses.dataclass(frozen=True)
class Task:
  """A model family's training recipe for one config.

  Attributes:
    model: the Flax module being trained.
    loss_fn: (params, batch, rng, loss_history, step) -> (loss, aux), for step.make_train_step.
    model_batch: host pipeline batch (dict of numpy) -> dict(image, cond) of numpy arrays.
    schedule: the diffusion Schedule, or None (CLIP).
    embed: optional jitted (embed_params, batch) -> batch run before the step (the prior's frozen CLIP).
    embed_params: the params `embed` takes.
    checkpoint_extra: optional (state, batch) -> dict of scalar arrays stored with every checkpoint
      (an autoencoder's latent scale).
    frozen: which checkpoints of its frozen models the run trains on (a latent U-Net's record,
      train.frozen_autoencoder), kept in the workdir; None for the others.
  """
  model: Any
  loss_fn: Callable
  model_batch: Callable
  schedule: Optional[schedules.Schedule] = None
  embed: Optional[Callable] = None
  embed_params: Any = None
  checkpoint_extra: Optional[Callable] = None
  frozen: Optional[dict] = None


class Family:
  """A model family; subclasses override what differs from these defaults (a model that trains, reads no
  text, is neither evaluated nor sampled by the CLI)."""

  name = ""
  # How --mode=eval scores a workdir (eval.evaluate.SCORERS): "samples" (the oracle reads a text-to-image
  # model's samples), "reconstructions" (an autoencoder's), "ranking" (a CLIP's zero-shot captions); "": none.
  evaluation = ""

  def task(self, config, model, workdir: Optional[str]) -> Task:
    raise NotImplementedError

  def reads_text(self, model_config) -> bool:
    """Whether the model reads tokenised captions (the run then loads config.data.tokenizer)."""
    del model_config
    return False

  def check_text(self, config, tokenizer) -> None:
    """Raises a ValueError unless the tokenizer and the model's text encoder agree on vocabulary and length."""
    del config, tokenizer

  def check_eval(self, config) -> None:
    """Raises a ValueError unless --mode=eval can score a workdir of this config."""
    del config
    if not self.evaluation:
      raise ValueError(f"--mode=eval does not score a {self.name!r} model; it scores text-to-image U-Nets, "
                       "chains, CLIPs and autoencoders.")

  def check_sample(self, config, prompts) -> None:
    """Raises a ValueError unless --mode=sample draws images from a workdir of this config (with `prompts`)."""
    del prompts
    raise ValueError(f"--mode=sample draws images from a U-Net's workdir; this config trains model.name="
                     f"{config.model.name!r}. Sample the U-Net's workdir (a classifier guides it through "
                     "config.sample.classifier_workdir).")

  def samples_in_training(self, config) -> bool:
    """Whether the training loop draws config.sample's grid every config.train.sample_every steps."""
    del config
    return False

  def runlocal_model(self, model_config, image_size: int) -> dict:
    """Model-section values that shrink it for a CPU test (`:runlocal`); {} when its config sets its own."""
    del model_config, image_size
    return {}


def check_vocabulary(config, tokenizer, vocab_size: int, context: int, where: str, context_key: str) -> None:
  """Raises a ValueError unless the tokenizer fits a text encoder of vocab_size tokens and `context` positions
  (named `where`.vocab_size and `where`.`context_key` in the message)."""
  if len(tokenizer) > vocab_size:
    raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {where}.vocab_size={vocab_size}; "
                     f"raise vocab_size to at least {len(tokenizer)}.")
  if config.data.context_length != context:
    raise ValueError(f"data.context_length={config.data.context_length} must equal {where}.{context_key}={context}.")


def build_schedule(diffusion_config) -> schedules.Schedule:
  """The diffusion section's Schedule."""
  return schedules.make_schedule(schedules.beta_schedule(diffusion_config.schedule, diffusion_config.num_timesteps))


def labels(batch: dict, data_config) -> np.ndarray:
  """int32 [B] class labels: batch[data.label_key] ("label" by default).

  A per-object attribute of captioned shapes ([B, 2], e.g. label_key="shapes")
  gives the first object's, so class-conditional configs can run on the
  embedded dataset.
  """
  key = data_config.label_key
  if key not in batch:
    raise ValueError(f"a class-conditional model needs labels, but the batches of data.name="
                     f"{data_config.name!r} have no {key!r} (keys: {sorted(batch)}); set data.label_key to one "
                     "of them (for captioned shapes, 'shapes' or 'colors').")
  y = np.asarray(batch[key])
  return (y[:, 0] if y.ndim == 2 else y).astype(np.int32)


def text_inputs(batch: dict) -> dict:
  """The caption's tokens and mask of a pipeline batch."""
  return {"tokens": batch["tokens"], "token_mask": batch["token_mask"]}
