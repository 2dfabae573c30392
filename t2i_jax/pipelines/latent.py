"""Latent diffusion (Rombach et al., 2022): prompt → text states → latents sampled → decoder → image.

A latent model is a chain of trained stages, each read from its workdir (`stage.load_stage`):

  text encoder  caption → token states [N, L, D]          a frozen CLIP's text tower (configs/shapes_clip.py),
                                                          or the U-Net's own encoder (model.text)
  latent U-Net  noise → s·z [N, h, w, c], cross-attending  configs/shapes_latent.py
  autoencoder   z → image [N, H, W, 3]                     configs/shapes_autoencoder.py

The U-Net's workdir records the checkpoints of the frozen models it trained on (train.frozen_autoencoder);
the chain loads exactly those, after checking that they are the chain config's. Each stage is one jitted
program: the text encoder, the sampling loop (`text_to_image.sample_unet`, latents left unclipped) and the
decoder, whose params are arguments.
"""

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from t2i_jax.models import frozen
from t2i_jax.pipelines import chain as chain_lib, stage as stage_lib, text_to_image
from t2i_jax.pipelines.text_to_image import SampleSettings
from t2i_jax.train import families, frozen_autoencoder

OUTPUTS = ("image",)


@dataclasses.dataclass(frozen=True)
class Stages:
  """The loaded stages of a latent diffusion chain.

  Attributes:
    unet: the latent U-Net's Stage.
    autoencoder: the autoencoder's Stage, at the step the U-Net trained on.
    latent_scale: s, the factor the U-Net's latents carry (the autoencoder checkpoint's).
    clip: the frozen CLIP's Stage whose token states the U-Net reads, or None (its own text encoder).
  """
  unet: stage_lib.Stage
  autoencoder: stage_lib.Stage
  latent_scale: float
  clip: Optional[stage_lib.Stage] = None


def load(latent_config) -> Stages:
  """The stages named by a chain config's latent section; ValueError (one line) if the U-Net is not a latent
  U-Net or was trained on another autoencoder or text encoder than the section names."""
  unet_workdir = latent_config.unet_workdir
  config = stage_lib.read_config(unet_workdir)
  if families.unet.role(config) != "latent":
    raise ValueError(f"latent.unet_workdir={unet_workdir} holds a U-Net trained on images, not latents; point it "
                     "at a workdir of configs/shapes_latent.py.")
  record = frozen_autoencoder.read_record(unet_workdir)
  frozen_autoencoder.check_same(record, latent_config.autoencoder_workdir, latent_config.clip_workdir,
                                f"the latent U-Net in {unet_workdir}")
  return load_from_record(stage_lib.load_stage(unet_workdir, config), record)


def load_from_record(unet: stage_lib.Stage, record: dict) -> Stages:
  """A Stages of a latent U-Net stage and its frozen-model record (each model at its recorded step)."""
  entry = record["autoencoder"]
  autoencoder = stage_lib.load_stage(entry["workdir"], step=entry["step"], use_ema=True)
  clip = None
  if record.get("clip"):
    clip = stage_lib.load_stage(record["clip"]["workdir"], step=record["clip"]["step"], use_ema=True)
  return Stages(unet, autoencoder, float(entry["latent_scale"]), clip)


@functools.partial(jax.jit, static_argnames=("clip_model", "pooled"))
def _text_context(clip_model, clip_params, tokens, token_mask, pooled):
  return frozen.text_context(clip_model, clip_params, tokens, token_mask, pooled)


@functools.partial(jax.jit, static_argnames=("model",))
def _decode(model, variables, latents, latent_scale):
  return jnp.clip(frozen.decode(model, variables, latents / latent_scale), -1.0, 1.0)


def text_cond(latent: Stages, prompts: Sequence[str]) -> dict:
  """The U-Net's text conditioning for the prompts: tokens and their mask (its own encoder) or the frozen
  CLIP's token states and mask (context, context_mask) and, for a U-Net that reads it, its pooled text
  embedding (pooled)."""
  cond = latent.unet.text_cond(prompts)
  if latent.clip is None:
    return cond
  return _text_context(latent.clip.model, latent.clip.params, jnp.asarray(cond["tokens"]),
                       jnp.asarray(cond["token_mask"]), latent.unet.model.pooled_dim is not None)


def decode(latent: Stages, latents: jax.Array) -> jax.Array:
  """Images [N, H, W, 3] in [-1, 1] of scaled latents [N, h, w, c] (the U-Net's samples)."""
  return _decode(latent.autoencoder.model, latent.autoencoder.variables, latents, jnp.float32(latent.latent_scale))


def generate(latent: Stages, prompts: Sequence[str], settings: SampleSettings) -> dict:
  """Prompts → dict(image [N, H, W, 3] in [-1, 1], latents [N, h, w, c] as sampled (scaled)); settings.guidance
  is classifier-free guidance against the model's null condition (no text)."""
  unet = latent.unet
  latents = text_to_image.sample_unet(unet.model, unet.params, unet.diffusion, text_cond(latent, prompts),
                                      len(prompts), settings)
  return {"image": decode(latent, latents), "latents": latents}


def settings(section, stages: Stages, seed: int = 0, overrides: Optional[dict] = None) -> SampleSettings:
  """The U-Net's SampleSettings: the chain's METHOD:STEPS:GUIDANCE over the U-Net's own sample section,
  `overrides` (an eval row's, the CLI's non-None values) on top."""
  return text_to_image.stage_settings(stages.unet, section.sampler, seed, **(overrides or {}))


CHAIN = chain_lib.Chain(section="latent", outputs=OUTPUTS, load=load, settings=settings, generate=generate)
