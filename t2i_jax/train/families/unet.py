"""The U-Net family: ADM / GLIDE / unCLIP-decoder / latent U-Nets trained with diffusion_loss.

One U-Net module plays several roles, decided by its config (`role`):

  role         what it is                                   batch it reads
  text         a text-conditional base: draws from prompts   image, tokens
  inpaint      a text U-Net that fills a masked image        image (masked on the devices), tokens
  super_res    an upsampler (text-conditional or not)        image, low_res (its image downsampled, noised)
  decoder      unCLIP's decoder on CLIP image embeddings     image, tokens -> frozen CLIP -> clip_emb
  latent       on an autoencoder's scaled latents            image -> frozen autoencoder -> s·z, tokens
                                                            (-> frozen CLIP -> token states as context)
  class        class-conditional                             image, label
  unconditional                                              image

A U-Net smaller than the data's images trains on them box-downsampled to its size; a super-resolution
U-Net's low_res input is downsampled config.low_res.factor times more and noise-augmented in the loss; an
inpainting U-Net sees its image under a random mask drawn in the loss (data.masks).
"""

from typing import Optional

import jax
import numpy as np

from t2i_jax import config_keys, models
from t2i_jax.data import input_pipeline, masks
from t2i_jax.diffusion import augmentation, schedules
from t2i_jax.train import diffusion_loss, frozen_autoencoder, frozen_clip
from t2i_jax.train.families import base

ROLES = ("latent", "decoder", "super_res", "inpaint", "text", "class", "unconditional")


def role(config) -> str:
  """What a U-Net config is (one of ROLES, the first that applies): "latent" with a latent_diffusion section,
  "decoder" with model.clip_dim, "super_res" with model.super_res, "inpaint" with model.inpaint, "text" with
  model.text, "class" with model.num_classes, else "unconditional"; None for a model that is not a U-Net."""
  model = config.model
  if models.module_class(model) is not models.UNet:
    return None
  if config.get("latent_diffusion") is not None:
    return "latent"
  if model.get("clip_dim") is not None:
    return "decoder"
  if model.get("super_res"):
    return "super_res"
  if model.get("inpaint"):
    return "inpaint"
  if model.get("text") is not None:
    return "text"
  return "class" if model.get("num_classes") is not None else "unconditional"


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


# One level of one res block (plus attention and the middle block): every code path of the family,
# compiled in a few seconds.
RUNLOCAL_MODEL = dict(model_channels=32, num_res_blocks=1, channel_mult=(1,), num_head_channels=16, dropout=0.0)

_EVAL_REFUSALS = {
    "latent": "a latent U-Net's samples are latents; score the chain config that decodes them "
              "(configs/shapes_latent_chain.py).",
    "super_res": "--mode=eval scores a base text U-Net; a super-resolution U-Net needs low-resolution inputs, so "
                 "score it in a cascade (configs/shapes_glide.py), or its bits/dim with eval.bits_per_dim.",
    "decoder": "--mode=eval scores a U-Net that draws from prompts; unCLIP's decoder draws from CLIP embeddings, "
               "so score the chain config (configs/shapes_unclip.py) that feeds it the prior's.",
    "inpaint": "--mode=eval scores a U-Net that draws from prompts alone; an inpainting U-Net fills a given "
               "image, so score the base it was fine-tuned from.",
}


class UNetFamily(base.Family):
  """models.UNet trained by diffusion_loss, in any of its ROLES."""

  name = "unet"
  evaluation = "samples"

  def reads_text(self, model_config) -> bool:
    # Its own GLIDE-style encoder, or a frozen CLIP's token states (context_dim) from the same tokens.
    return model_config.get("text") is not None or model_config.get("context_dim") is not None

  def check_text(self, config, tokenizer) -> None:
    text = config.model.get("text")
    if text is not None:
      base.check_vocabulary(config, tokenizer, text.vocab_size, text.context_length, "model.text",
                            "context_length")

  def check_eval(self, config) -> None:
    kind = role(config)
    if kind in _EVAL_REFUSALS:
      raise ValueError(_EVAL_REFUSALS[kind])
    if kind != "text":
      raise ValueError("--mode=eval scores a text-conditional U-Net trained on captioned shapes, or an "
                       "autoencoder, a CLIP or a chain; this U-Net is not conditioned on text.")

  def check_sample(self, config, prompts) -> None:
    kind = role(config)
    if kind == "latent":
      raise ValueError("a latent U-Net's samples are latents; sample the chain config that decodes them "
                       "(configs/shapes_latent_chain.py).")
    if prompts and kind == "decoder":
      raise ValueError("unCLIP's decoder samples from CLIP image embeddings (of test images, here); to draw a "
                       "prompt, sample the chain config (configs/shapes_unclip.py), whose prior makes them.")
    if prompts and config.model.get("text") is None:
      raise ValueError("this U-Net is not conditioned on text; sample it without --prompt.")

  def samples_in_training(self, config) -> bool:
    return role(config) != "latent"  # its samples are latents: the chain config decodes them

  def runlocal_model(self, model_config, image_size: int) -> dict:
    shrunk = {k: v for k, v in RUNLOCAL_MODEL.items() if k in model_config}
    return dict(shrunk, image_size=image_size,
                attention_resolutions=(image_size // model_config.get("patch_size", 1),))

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    schedule = base.build_schedule(config.diffusion)
    kind = role(config)
    if model.context_dim is not None and kind != "latent":
      raise ValueError("a U-Net on cross-attention context reads a frozen CLIP's token states: set "
                       "latent_diffusion.clip_workdir (configs/shapes_latent.py).")
    if kind == "decoder" and config.get("decoder") is None:
      raise ValueError("a U-Net conditioned on CLIP embeddings (unCLIP's decoder) reads them from a frozen CLIP: "
                       "set decoder.clip_workdir to a CLIP's workdir (configs/shapes_decoder.py).")
    factor = 1 if kind == "latent" else downsample_factor(config)  # latents: the autoencoder takes them whole
    low_res_factor = config_keys.section_of(config, "low_res").factor
    embed = embed_params = frozen = None
    drop_rates = None
    if kind == "latent":
      if model.super_res or model.inpaint or model.clip_dim is not None:
        raise ValueError("a latent U-Net here is text-conditional only: set model.super_res, model.inpaint "
                         "and model.clip_dim off.")
      if workdir is None:
        raise ValueError("a latent U-Net's task needs its workdir (it records the frozen models it trains on).")
      frozen = frozen_autoencoder.frozen_models(config, workdir)
      ae_model, ae_params, scale, clip_model, clip_params = frozen_autoencoder.load(frozen)
      embed = jax.jit(frozen_autoencoder.make_latent_embed_fn(ae_model, clip_model, model.pooled_dim is not None))
      embed_params = dict(autoencoder=ae_params, latent_scale=np.float32(scale), clip=clip_params)
    if kind == "decoder":
      clip_model, embed_params, _ = frozen_clip.load(config.decoder.clip_workdir, config, "decoder")
      embed = jax.jit(frozen_clip.make_decoder_embed_fn(clip_model))
      drop_rates = {"clip_emb": config.decoder.p_drop_clip}
      if model.text is not None:
        drop_rates["text"] = config.decoder.p_drop_text

    def model_batch(batch):
      image = batch["image"] if factor == 1 else input_pipeline.downsample(batch["image"], factor)
      out, cond = {"image": image}, {}
      if self.reads_text(config.model):  # context: tokens -> the frozen CLIP's states
        cond.update(base.text_inputs(batch))
      if model.num_classes is not None:
        cond["y"] = base.labels(batch, config.data)
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
    loss_fn = diffusion_loss.make_loss_fn(model, schedule, config.diffusion, drop_rates=drop_rates,
                                          augment=augment)
    return base.Task(model, loss_fn, model_batch, schedule, embed, embed_params, frozen=frozen)


FAMILY = UNetFamily()
