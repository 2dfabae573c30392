"""A frozen autoencoder and text encoder in the training loop: latent diffusion's conditioning stages.

A latent U-Net (config section `latent_diffusion`) trains on the scaled latents s·z of the data's images
under an autoencoder trained by configs/shapes_autoencoder.py, and reads captions either through its own
GLIDE-style encoder (model.text) or as the token states of a frozen CLIP's text tower (Stable Diffusion's
choice; model.context_dim = the CLIP's text_width). Neither frozen model is retrained: both run on the
sharded batch before each step (`make_latent_embed_fn`), their params arguments of the jitted program.

The latent scale s = 1 / std(z) over a batch of training images (LDM's scale_factor) is computed by the
autoencoder's own trainer at every save with the params it saves (`latent_scale_extra`) and stored in that
checkpoint; every later stage reads it from there. A latent run records which checkpoint of each frozen
model it trains on (frozen_models.json in its workdir): a resumed run and a chain load exactly those steps.
"""

import json
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from t2i_jax import models
from t2i_jax.models import autoencoder, clip, frozen
from t2i_jax.train import checkpoint, frozen_clip

FROZEN_MODELS = "frozen_models.json"


def latent_scale_extra(model) -> Callable:
  """(state, batch) -> {"latent_scale": 1 / std of the batch's latents under the EMA params}: what an
  autoencoder's checkpoint stores beside its state (families.Task.checkpoint_extra)."""

  @jax.jit
  def scale(params, images):
    return 1.0 / jnp.std(frozen.latents(model, params, images).astype(jnp.float32))

  return lambda state, batch: {"latent_scale": scale(state.ema_params, batch["image"])}


def read_latent_scale(workdir: str, step: int) -> float:
  """The latent scale stored with the autoencoder checkpoint `step` of workdir."""
  scale = checkpoint.read_extra(workdir, step).get("latent_scale")
  if scale is None:
    raise ValueError(f"the checkpoint at step {step} in {workdir} stores no latent scale: it was saved before "
                     "autoencoders stored one; train it on (one more save writes it) and point the latent "
                     "U-Net at it again.")
  return float(scale)


def _record(workdir: str) -> Optional[dict]:
  path = os.path.join(workdir, FROZEN_MODELS)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_record(workdir: str) -> dict:
  """{"autoencoder": {"workdir", "step", "latent_scale"}, "clip": {...} or None} of a latent U-Net's workdir."""
  record = _record(workdir)
  if record is None:
    raise ValueError(f"{workdir} has no {FROZEN_MODELS}: it is not the workdir of a latent U-Net that has "
                     "started training (configs/shapes_latent.py).")
  return record


def _latest_step(workdir: str, who: str) -> int:
  manager = checkpoint.make_manager(workdir, read_only=True)
  try:
    step = manager.latest_step()
  finally:
    manager.close()
  if step is None:
    raise ValueError(f"{who} {workdir} has no checkpoint; train it first.")
  return step


def check_autoencoder(ae_config, ae_workdir: str, config) -> None:
  """Raises a one-line ValueError unless the latent U-Net's `config` fits the autoencoder's."""
  if models.module_class(ae_config.model) not in (autoencoder.AutoencoderKL, autoencoder.VQModel):
    raise ValueError(f"{ae_workdir} holds a {ae_config.model.name!r} model, not an autoencoder; set "
                     "latent_diffusion.autoencoder_workdir to a workdir of configs/shapes_autoencoder.py.")
  ae = ae_config.model
  side = models.build(ae).latent_shape[0]
  model = config.model
  if (model.image_size, model.in_channels) != (side, ae.embed_dim):
    raise ValueError(f"the autoencoder in {ae_workdir} makes {side}×{side}×{ae.embed_dim} latents but the U-Net "
                     f"has image_size={model.image_size}, in_channels={model.in_channels}; set them to "
                     f"{side} and {ae.embed_dim} (and out_channels={ae.embed_dim}).")
  if config.data.image_size != ae.resolution:
    raise ValueError(f"the autoencoder in {ae_workdir} reads {ae.resolution}px images but data.image_size="
                     f"{config.data.image_size}; set data.image_size={ae.resolution}.")


def check_text_encoder(clip_config, clip_workdir: str, config) -> None:
  """Raises a one-line ValueError unless the U-Net can read the CLIP's token states (or, without a CLIP,
  has its own text encoder)."""
  model = config.model
  if clip_config is None:
    if model.get("pooled_dim") is not None:
      raise ValueError("model.pooled_dim reads a frozen CLIP's pooled text embedding: set "
                       "latent_diffusion.clip_workdir, or model.pooled_dim=None.")
    if model.get("text") is None:
      raise ValueError("a latent U-Net reads captions through model.text (its own encoder) or a frozen CLIP's "
                       "token states: set model.text, or latent_diffusion.clip_workdir and model.context_dim.")
    return
  if model.get("text") is not None:
    raise ValueError("latent_diffusion.clip_workdir is set: the U-Net reads the CLIP's token states, so "
                     "set model.text=None and model.context_dim to the CLIP's text_width.")
  if models.module_class(clip_config.model) is not clip.CLIP or clip_config.model.get("timestep_conditioned"):
    raise ValueError(f"{clip_workdir} holds no clean-image CLIP; set latent_diffusion.clip_workdir to a "
                     "workdir of configs/shapes_clip.py.")
  width = clip_config.model.text_width
  if model.get("context_dim") != width:
    raise ValueError(f"the CLIP in {clip_workdir} has text_width={width} but the U-Net has model.context_dim="
                     f"{model.get('context_dim')}; set model.context_dim={width}.")
  pooled = model.get("pooled_dim")
  if pooled is not None and pooled != clip_config.model.embed_dim:
    raise ValueError(f"the CLIP in {clip_workdir} has embed_dim={clip_config.model.embed_dim} but the U-Net has "
                     f"model.pooled_dim={pooled}; set model.pooled_dim={clip_config.model.embed_dim} (or None).")
  if clip_config.data.tokenizer != config.data.tokenizer or (
      clip_config.data.context_length != config.data.context_length):
    raise ValueError(f"the CLIP in {clip_workdir} reads {clip_config.data.tokenizer!r} tokens at context length "
                     f"{clip_config.data.context_length}; set data.tokenizer and data.context_length to those.")


def frozen_models(config, workdir: str) -> dict:
  """The frozen models a latent U-Net run trains on: its record when the workdir has one (a resumed run,
  checked against the config's workdirs), else the newest checkpoints of the config's, as a new record.

  Returns the record: {"autoencoder": {"workdir", "step", "latent_scale"}, "clip": {"workdir", "step"} | None}.
  """
  settings = config.latent_diffusion
  record = _record(workdir)
  if record is not None:
    check_same(record, settings.autoencoder_workdir, settings.clip_workdir, f"the run in {workdir}")
    return record
  if checkpoint.has_checkpoint(workdir):
    raise ValueError(f"{workdir} has checkpoints but no {FROZEN_MODELS}: which autoencoder and text encoder "
                     "steps it trained on is lost; train in a new --workdir.")
  ae_workdir, clip_workdir = settings.autoencoder_workdir, settings.clip_workdir
  ae_config = checkpoint.read_config(ae_workdir)
  check_autoencoder(ae_config, ae_workdir, config)
  clip_config = checkpoint.read_config(clip_workdir) if clip_workdir else None
  check_text_encoder(clip_config, clip_workdir, config)
  ae_step = _latest_step(ae_workdir, "the autoencoder in")
  record = {"autoencoder": {"workdir": os.path.realpath(ae_workdir), "step": ae_step,
                            "latent_scale": read_latent_scale(ae_workdir, ae_step)},
            "clip": None}
  if clip_workdir:
    record["clip"] = {"workdir": os.path.realpath(clip_workdir), "step": _latest_step(clip_workdir, "the CLIP in")}
  return record


def write_record(workdir: str, record: dict) -> None:
  """Keeps the record beside config.json (process 0), once: a resumed run reads it back."""
  path = os.path.join(workdir, FROZEN_MODELS)
  if jax.process_index() == 0 and not os.path.exists(path):
    with open(path + ".tmp", "w") as f:
      json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)


def check_same(record: dict, ae_workdir: str, clip_workdir: str, who: str) -> None:
  """Raises a one-line ValueError if the autoencoder or CLIP workdirs differ from those `who` was trained on."""
  trained = record["autoencoder"]["workdir"]
  if not frozen_clip.same_workdir(trained, ae_workdir):
    raise ValueError(f"{who} was trained on the autoencoder in {trained}, not {ae_workdir}; name that "
                     "autoencoder (or train a latent U-Net on this one).")
  trained = (record.get("clip") or {}).get("workdir", "")
  if bool(trained) != bool(clip_workdir) or (trained and not frozen_clip.same_workdir(trained, clip_workdir)):
    raise ValueError(f"{who} was trained on the text encoder {trained or '(its own, model.text)'}, not "
                     f"{clip_workdir or '(none)'}; name that text encoder (or train a latent U-Net on this one).")


def load(record: dict):
  """(ae_model, ae_params, latent_scale, clip_model or None, clip_params or None): the frozen models of a
  latent U-Net's record, each at the step it was trained on (EMA params)."""
  entry = record["autoencoder"]
  ae_config = checkpoint.read_config(entry["workdir"])
  ae_model, ae_params, _ = checkpoint.load_params(ae_config, entry["workdir"], use_ema=True, step=entry["step"])
  clip_model = clip_params = None
  if record.get("clip"):
    entry = record["clip"]
    clip_config = checkpoint.read_config(entry["workdir"])
    clip_model, clip_params, _ = checkpoint.load_params(clip_config, entry["workdir"], use_ema=True,
                                                        step=entry["step"])
  return ae_model, ae_params, record["autoencoder"]["latent_scale"], clip_model, clip_params


def make_latent_embed_fn(ae_model, clip_model: Optional[Any], pooled: bool = False) -> Callable:
  """(embed_params, batch) -> the latent U-Net's batch: image := s·latents; with a CLIP, the caption's tokens
  replaced by its token states (and its pooled embedding with `pooled`, `models.frozen.text_context`).

  embed_params: dict(autoencoder=params, latent_scale=float32 scalar, clip=params or None).
  batch: dict(image [B, H, W, C] in [-1, 1], cond=dict(tokens, token_mask) or the U-Net's own text inputs).
  """

  def embed(embed_params, batch):
    z = frozen.latents(ae_model, embed_params["autoencoder"], batch["image"]) * embed_params["latent_scale"]
    cond = dict(batch["cond"])
    if clip_model is not None:
      tokens, mask = cond.pop("tokens"), cond.pop("token_mask")
      cond.update(frozen.text_context(clip_model, embed_params["clip"], tokens, mask, pooled))
    return dict(batch, image=z, cond=cond)

  return embed

