"""What training means for each model family: its loss, and how a pipeline batch becomes its inputs.

`make_task(config)` reads config.model.name and returns a Task:

  family       loss                                      batch it reads
  unet         diffusion_loss (L_simple / hybrid, CFG)   image (+ tokens | label | low_res | random mask)
    decoder    the same, + unCLIP's condition dropout    image, tokens -> frozen CLIP -> clip_emb
    latent     the same, on latents                      image -> frozen autoencoder -> s·z, tokens
                                                         (-> frozen CLIP -> token states as context)
  classifier   classifier_loss (cross-entropy on x_t)    image, label
  clip         clip_loss (symmetric contrastive)         image, tokens
  prior        prior_loss (x0 MSE on CLIP embeddings)    image, tokens -> frozen CLIP -> embeddings
  autoencoder  autoencoder_loss (reconstruction + KL/VQ) image

A pipeline batch is the grain iterator's dict of numpy arrays (input_pipeline);
`Task.model_batch` turns it into dict(image, cond) on the host, the train step's
batch. The prior's, the decoder's and a latent U-Net's batches go through
`Task.embed` (a jitted frozen CLIP, train.frozen_clip; a frozen autoencoder and
CLIP, train.frozen_autoencoder) on the devices first. A U-Net smaller than the
data's images trains on them box-downsampled to its size (unCLIP's decoder reads
the CLIP's 32px renders at 16px); a super-resolution U-Net's low_res input is
downsampled config.low_res.factor times more, and noise-augmented in the loss; an
inpainting U-Net sees its image under a random mask drawn in the loss (data.masks).
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

from t2i_jax import models
from t2i_jax.data import input_pipeline, masks, tokenizer as tokenizer_lib
from t2i_jax.diffusion import augmentation, schedules
from t2i_jax.train import (autoencoder_loss, classifier_loss, clip_loss, config_keys, diffusion_loss,
                           frozen_autoencoder, frozen_clip, prior_loss)

FAMILIES = ("unet", "classifier", "clip", "prior", "autoencoder_kl", "autoencoder_vq")


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


def tokenizer_for(config):
  """The tokenizer of config.data.tokenizer if the config's model reads tokens (a text U-Net, one reading a
  frozen CLIP's token states, CLIP, the prior), else None."""
  model = config.model
  reads_text = model.get("text") is not None or model.get("context_dim") is not None
  if model.name in ("clip", "prior") or (model.name == "unet" and reads_text):
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


def downsample_factor(config) -> int:
  """How many times the data's images are box-downsampled to the U-Net's image_size (1: same size)."""
  data_size, size = config.data.image_size, config.model.image_size
  if data_size % size:
    raise ValueError(f"data.image_size={data_size} is not a multiple of model.image_size={size}; the U-Net "
                     "trains on the data's images box-downsampled to its size, so pick sizes that divide.")
  return data_size // size


def low_res_augment(config, model, schedule: schedules.Schedule):
  """The loss's augment (cond, rng) -> cond for a super-resolution U-Net: low_res corrupted as
  config.low_res says, its level as noise_aug_t when the model embeds it; None when nothing is done."""
  settings = config_keys.section_of(config, "low_res")
  for key in ("noise_aug_max", "noise_aug_sample"):
    if not 0 <= settings[key] < schedule.num_timesteps:
      raise ValueError(f"low_res.{key}={settings[key]} must be a timestep of the diffusion's schedule, in "
                       f"[0, {schedule.num_timesteps - 1}].")
  if not settings.noise_aug_max and not settings.blur_sigma_max and not model.noise_aug_embedding:
    return None

  def augment(cond, rng):
    low_res, level = augmentation.augment_low_res(schedule, cond["low_res"], rng,
                                                  max_level=settings.noise_aug_max,
                                                  blur_sigma_max=settings.blur_sigma_max)
    cond = dict(cond, low_res=low_res)
    if model.noise_aug_embedding:
      cond["noise_aug_t"] = level
    return cond

  return augment


def inpaint_augment(config):
  """The loss's augment (cond, rng) -> cond for an inpainting U-Net (GLIDE §3.4): a random training mask per
  example (data.masks, as config.inpaint says), drawn on the devices; the U-Net sees the clean image
  (cond["inpaint_image"]) only where the mask is 1."""
  settings = masks.MaskSettings(**config_keys.section_of(config, "inpaint"))
  size = config.model.image_size

  def augment(cond, rng):
    return dict(cond, inpaint_mask=masks.random_masks(rng, cond["inpaint_image"].shape[0], size, settings))

  return augment


def compose_augments(*augments):
  """One augment running the given ones (None entries skipped) in order, each on its own fold of the rng."""
  augments = [a for a in augments if a is not None]
  if len(augments) <= 1:
    return augments[0] if augments else None

  def augment(cond, rng):
    for i, each in enumerate(augments):
      cond = each(cond, jax.random.fold_in(rng, i))
    return cond

  return augment


def _unet_task(config, model, workdir) -> Task:
  schedule = build_schedule(config.diffusion)
  latent = config.get("latent_diffusion") is not None
  if model.context_dim is not None and not latent:
    raise ValueError("a U-Net on cross-attention context reads a frozen CLIP's token states: set "
                     "latent_diffusion.clip_workdir (configs/shapes_latent.py).")
  if model.clip_dim is not None and config.get("decoder") is None:
    raise ValueError("a U-Net conditioned on CLIP embeddings (unCLIP's decoder) reads them from a frozen CLIP: "
                     "set decoder.clip_workdir to a CLIP's workdir (configs/shapes_decoder.py).")
  factor = 1 if latent else downsample_factor(config)  # a latent U-Net's images go to the autoencoder whole
  low_res_factor = config_keys.section_of(config, "low_res").factor
  embed = embed_params = frozen = None
  drop_rates = None
  if latent:
    if model.super_res or model.inpaint or model.clip_dim is not None:
      raise ValueError("a latent U-Net here is text-conditional only: set model.super_res, model.inpaint "
                       "and model.clip_dim off.")
    if workdir is None:
      raise ValueError("a latent U-Net's task needs its workdir (it records the frozen models it trains on).")
    frozen = frozen_autoencoder.frozen_models(config, workdir)
    ae_model, ae_params, scale, clip_model, clip_params, _ = frozen_autoencoder.load(frozen)
    embed = jax.jit(frozen_autoencoder.make_latent_embed_fn(ae_model, clip_model, model.pooled_dim is not None))
    embed_params = dict(autoencoder=ae_params, latent_scale=np.float32(scale), clip=clip_params)
  if model.clip_dim is not None:
    clip_model, embed_params, _ = frozen_clip.load(config.decoder.clip_workdir, config, "decoder")
    embed = jax.jit(frozen_clip.make_decoder_embed_fn(clip_model))
    drop_rates = {"clip_emb": config.decoder.p_drop_clip}
    if model.text is not None:
      drop_rates["text"] = config.decoder.p_drop_text

  def model_batch(batch):
    image = batch["image"] if factor == 1 else input_pipeline.downsample(batch["image"], factor)
    out, cond = {"image": image}, {}
    if model.text is not None or model.context_dim is not None:  # context: tokens -> the frozen CLIP's states
      cond.update(_text(batch))
    if model.num_classes is not None:
      cond["y"] = labels(batch, config.data)
    if model.super_res:
      cond["low_res"] = input_pipeline.downsample(image, low_res_factor)
    if model.inpaint:
      cond["inpaint_image"] = image  # masked on the devices (inpaint_augment)
    if embed is not None:
      out["clip_image"] = batch["image"]
    out["cond"] = cond
    return out

  augment = compose_augments(low_res_augment(config, model, schedule) if model.super_res else None,
                             inpaint_augment(config) if model.inpaint else None)
  loss_fn = diffusion_loss.make_loss_fn(model, schedule, config.diffusion, drop_rates=drop_rates, augment=augment)
  return Task(model, loss_fn, model_batch, schedule, embed, embed_params, frozen=frozen)


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
  clip_model, clip_params, _ = frozen_clip.load(config.prior.clip_workdir, config, "prior")
  embed = jax.jit(frozen_clip.make_prior_embed_fn(clip_model))
  return Task(model, prior_loss.make_loss_fn(model, schedule, config.diffusion),
              lambda batch: {"image": batch["image"], "cond": _text(batch)}, schedule, embed, clip_params)


def _autoencoder_task(config, model) -> Task:
  if config.data.image_size % model.resolution:
    raise ValueError(f"data.image_size={config.data.image_size} is not a multiple of model.resolution="
                     f"{model.resolution}; the autoencoder trains on the data's images box-downsampled to its size.")
  factor = config.data.image_size // model.resolution

  def model_batch(batch):
    return {"image": batch["image"] if factor == 1 else input_pipeline.downsample(batch["image"], factor)}

  return Task(model, autoencoder_loss.make_loss_fn(model, config_keys.section_of(config, "autoencoder")),
              model_batch, checkpoint_extra=frozen_autoencoder.latent_scale_extra(model))


_TASKS = {"unet": _unet_task, "classifier": _classifier_task, "clip": _clip_task, "prior": _prior_task,
          "autoencoder_kl": _autoencoder_task, "autoencoder_vq": _autoencoder_task}


def make_task(config, workdir: Optional[str] = None) -> Task:
  """The Task for config.model.name (one of FAMILIES); workdir: the run's, read by a latent U-Net for the
  frozen models a resumed run trains on (nothing is written)."""
  name = config.model.get("name")
  if name not in _TASKS:
    raise ValueError(f"model.name={name!r} cannot be trained; use one of {', '.join(map(repr, FAMILIES))}.")
  model = models.build(config.model)
  return _unet_task(config, model, workdir) if name == "unet" else _TASKS[name](config, model)
