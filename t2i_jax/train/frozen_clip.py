"""A frozen CLIP in the training loop: the conditioning source of unCLIP's prior and decoder.

Both stages read a CLIP trained by configs/shapes_clip.py from its workdir, never
retrain it, and run it on the sharded batch before each train step (a jitted
`embed(clip_params, batch)`, so the params are an argument, not constants baked
into the step). Embeddings enter the diffusion stages scaled by `models.frozen.scale_embedding`;
the prior's samples come out in that scale and go into the decoder unchanged.
"""

import os
from typing import Callable

import jax.numpy as jnp

from t2i_jax import models
from t2i_jax.models import clip, frozen
from t2i_jax.train import checkpoint


def same_workdir(a: str, b: str) -> bool:
  """Whether two workdir paths name one directory."""
  return os.path.realpath(a) == os.path.realpath(b)


def check_matches(clip_config, clip_workdir: str, config, who: str) -> None:
  """Raises a ValueError, naming both sides, unless `config` (the prior's or decoder's) fits the CLIP's.

  clip_config: the CLIP run's config; config: the conditioned stage's; who: its name in messages.
  """
  embed_dim, model = clip_config.model.embed_dim, config.model
  if model.clip_dim != embed_dim:
    raise ValueError(f"the CLIP in {clip_workdir} has embed_dim={embed_dim} but the {who} has "
                     f"model.clip_dim={model.clip_dim}; set model.clip_dim={embed_dim}.")
  if model.get("text_dim") is not None and model.text_dim != clip_config.model.text_width:  # the prior's
    raise ValueError(f"the CLIP in {clip_workdir} has text_width={clip_config.model.text_width} but the {who} "
                     f"has model.text_dim={model.text_dim}; set model.text_dim={clip_config.model.text_width}.")
  if clip_config.data.tokenizer != config.data.tokenizer:
    raise ValueError(f"the CLIP in {clip_workdir} was trained with tokenizer {clip_config.data.tokenizer!r}, the "
                     f"{who} uses {config.data.tokenizer!r}; use the CLIP's tokenizer.")
  if clip_config.model.image_size != config.data.image_size:
    raise ValueError(f"the CLIP in {clip_workdir} reads {clip_config.model.image_size}px images but the {who}'s "
                     f"data are {config.data.image_size}px; set data.image_size={clip_config.model.image_size} "
                     "(a decoder trains on them downsampled to its model.image_size).")


def load(clip_workdir: str, config, who: str):
  """(clip_model, clip_params (EMA), clip_config) of the CLIP in clip_workdir, checked against `config`."""
  clip_config = checkpoint.read_config(clip_workdir)
  if models.module_class(clip_config.model) is not clip.CLIP:
    raise ValueError(f"{clip_workdir} holds a {clip_config.model.name!r} model, not a CLIP; point the {who} at "
                     "a workdir of configs/shapes_clip.py.")
  check_matches(clip_config, clip_workdir, config, who)
  clip_model, clip_params, _ = checkpoint.load_params(clip_config, clip_workdir, use_ema=True)
  return clip_model, clip_params, clip_config


def make_prior_embed_fn(clip_model) -> Callable:
  """(clip_params, batch) -> the prior's batch: dict(image_emb [B, E], cond=models.prior.make_cond's dict).

  batch: dict(image [B, S, S, 3] in [-1, 1], cond=dict(tokens, token_mask)).
  """

  def embed(clip_params, batch):
    cond = batch["cond"]
    text_emb, states = frozen.embed_text(clip_model, clip_params, cond["tokens"], cond["token_mask"])
    return {"image_emb": frozen.embed_images(clip_model, clip_params, batch["image"]),
            "cond": {"text_emb": text_emb, "text_tokens": states, "text_mask": cond["token_mask"].astype(bool),
                     "drop_text": jnp.zeros(cond["token_mask"].shape[:1], bool)}}

  return embed


def make_decoder_embed_fn(clip_model) -> Callable:
  """(clip_params, batch) -> the decoder's batch, cond["clip_emb"] [B, E] added from batch["clip_image"].

  batch: dict(image [B, H, W, 3] at the decoder's size, clip_image [B, S, S, 3] at the CLIP's,
  cond=the U-Net's other conditioning); clip_image is consumed.
  """

  def embed(clip_params, batch):
    batch = dict(batch)
    clip_image = batch.pop("clip_image")
    batch["cond"] = dict(batch["cond"], clip_emb=frozen.embed_images(clip_model, clip_params, clip_image))
    return batch

  return embed
