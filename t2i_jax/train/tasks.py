"""What training means for each model family: its loss, and how a pipeline batch becomes its inputs.

`make_task(config)` reads config.model.name and returns a Task:

  family       loss                                      batch it reads
  unet         diffusion_loss (L_simple / hybrid, CFG)   image (+ tokens | label | low_res)
  classifier   classifier_loss (cross-entropy on x_t)    image, label
  clip         clip_loss (symmetric contrastive)         image, tokens
  prior        prior_loss (x0 MSE on CLIP embeddings)    image, tokens -> frozen CLIP -> embeddings

A pipeline batch is the grain iterator's dict of numpy arrays (input_pipeline);
`Task.model_batch` turns it into dict(image, cond) on the host, the train step's
batch. The prior's batch goes through `Task.embed` (a jitted frozen CLIP) on
the devices first.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

from t2i_jax import models
from t2i_jax.data import input_pipeline, tokenizer as tokenizer_lib
from t2i_jax.diffusion import schedules
from t2i_jax.train import checkpoint, classifier_loss, clip_loss, diffusion_loss, prior_loss

FAMILIES = ("unet", "classifier", "clip", "prior")
LOW_RES_FACTOR = 4  # a super-resolution U-Net sees the image at a quarter of its side (GLIDE's 64 -> 256)


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
  """
  model: Any
  loss_fn: Callable
  model_batch: Callable
  schedule: Optional[schedules.Schedule] = None
  embed: Optional[Callable] = None
  embed_params: Any = None


def tokenizer_for(config):
  """The tokenizer of config.data.tokenizer if the config's model reads tokens (a text U-Net, CLIP, the
  prior), else None."""
  model = config.model
  if model.name in ("clip", "prior") or (model.name == "unet" and model.get("text") is not None):
    return tokenizer_lib.load_tokenizer(config.data.tokenizer)
  return None


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


def _text(batch: dict) -> dict:
  return {"tokens": batch["tokens"], "token_mask": batch["token_mask"]}


def _unet_task(config, model) -> Task:
  schedule = build_schedule(config.diffusion)
  if model.clip_dim is not None or model.context_dim is not None:
    raise ValueError("training a U-Net conditioned on CLIP embeddings or cross-attention context needs an "
                     "encoder in the loop, which this trainer does not have yet; train a text (model.text), "
                     "class (model.num_classes) or unconditional U-Net.")

  def model_batch(batch):
    cond = {}
    if model.text is not None:
      cond.update(_text(batch))
    if model.num_classes is not None:
      cond["y"] = labels(batch, config.data)
    if model.super_res:
      cond["low_res"] = input_pipeline.downsample(batch["image"], LOW_RES_FACTOR)
    return {"image": batch["image"], "cond": cond}

  return Task(model, diffusion_loss.make_loss_fn(model, schedule, config.diffusion), model_batch, schedule)


def _classifier_task(config, model) -> Task:
  schedule = build_schedule(config.diffusion)
  return Task(model, classifier_loss.make_loss_fn(model, schedule),
              lambda batch: {"image": batch["image"], "cond": {"y": labels(batch, config.data)}}, schedule)


def _clip_task(config, model) -> Task:
  schedule = build_schedule(config.diffusion) if model.timestep_conditioned else None
  return Task(model, clip_loss.make_loss_fn(model, schedule),
              lambda batch: {"image": batch["image"], "cond": _text(batch)}, schedule)


def _prior_task(config, model) -> Task:
  schedule = build_schedule(config.diffusion)
  if config.get("prior") is None:
    raise ValueError("a prior trains on a frozen CLIP's embeddings: set prior.clip_workdir to a CLIP's workdir "
                     "(configs/shapes_clip.py).")
  clip_config = checkpoint.read_config(config.prior.clip_workdir)
  clip_model, clip_params, _ = checkpoint.load_params(clip_config, config.prior.clip_workdir, use_ema=True)
  if clip_model.embed_dim != model.clip_dim or clip_model.text_width != model.text_dim:
    raise ValueError(f"the CLIP in {config.prior.clip_workdir} has embed_dim={clip_model.embed_dim} and "
                     f"text_width={clip_model.text_width}; set model.clip_dim and model.text_dim to match.")
  if clip_config.data.tokenizer != config.data.tokenizer:
    raise ValueError(f"the CLIP was trained with tokenizer {clip_config.data.tokenizer!r}, this config uses "
                     f"{config.data.tokenizer!r}; use the CLIP's tokenizer.")
  embed = jax.jit(prior_loss.make_embed_fn(clip_model))
  return Task(model, prior_loss.make_loss_fn(model, schedule, config.diffusion),
              lambda batch: {"image": batch["image"], "cond": _text(batch)}, schedule, embed, clip_params)


_TASKS = {"unet": _unet_task, "classifier": _classifier_task, "clip": _clip_task, "prior": _prior_task}


def make_task(config) -> Task:
  """The Task for config.model.name (one of FAMILIES)."""
  name = config.model.get("name")
  if name not in _TASKS:
    raise ValueError(f"model.name={name!r} cannot be trained; use one of {', '.join(map(repr, FAMILIES))}.")
  return _TASKS[name](config, models.build(config.model))
