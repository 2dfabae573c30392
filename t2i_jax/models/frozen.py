"""Frozen models at work: a CLIP's embeddings as the diffusion stages read them, an autoencoder's latents and
decodes, a CLIP's token states as a U-Net's context.

The training step's input path (train.frozen_clip, train.frozen_autoencoder) and the pipelines that sample
the trained stages call the same functions, so a stage sees at sampling exactly what it trained on. Each is
pure: the module and its params are arguments.
"""

import functools

import jax
import jax.numpy as jnp

from t2i_jax.models import autoencoder, clip


def scale_embedding(emb: jax.Array) -> jax.Array:
  """l2-normalised embeddings times sqrt(E), [B, E]: unit-variance coordinates for the diffusion.

  unCLIP normalises the embeddings; the sqrt(E) factor (DALLE2-pytorch's choice)
  gives each coordinate the scale the noise schedule is designed for.
  """
  return clip.l2_normalize(emb) * jnp.sqrt(jnp.float32(emb.shape[-1]))


# Compiled, the module static: a pipeline calls these outside any jit (a decoder's conditions, CLIP guidance's text,
# unCLIP's encoders), where a CLIP forward op by op dispatches and compiles ~100 programs; inside a jit they inline.
@functools.partial(jax.jit, static_argnames=("clip_model",))
def embed_images(clip_model, clip_params, images: jax.Array) -> jax.Array:
  """Scaled CLIP image embeddings [B, E] of images [B, S, S, 3] in [-1, 1] (S = the CLIP's image_size)."""
  emb = clip_model.apply({"params": clip_params}, clip.normalize_images(images), method="encode_image")
  return scale_embedding(emb)


@functools.partial(jax.jit, static_argnames=("clip_model",))
def embed_text(clip_model, clip_params, tokens: jax.Array, token_mask: jax.Array):
  """(scaled CLIP text embedding [B, E], per-token states [B, L, text_width]) of tokenised captions."""
  emb, states = clip_model.apply({"params": clip_params}, tokens, clip.eot_index_from_mask(token_mask),
                                 method="encode_text_states")
  return scale_embedding(emb), states


def text_context(clip_model, clip_params, tokens: jax.Array, token_mask: jax.Array, pooled: bool = False) -> dict:
  """A U-Net's text inputs from a frozen CLIP: context [B, L, text_width] (its final token states) and
  context_mask bool [B, L]; with `pooled`, also pooled [B, E], the caption's CLIP text embedding (scaled
  as every stage reads it).

  The mask is all True: as in Stable Diffusion, the U-Net attends to every position of the text tower's
  output, padding included. A causal tower computes each padding state from the whole caption, so they are
  summaries of it (experiments/latent_vs_pixel: held-out pairs 46.2% against 33.8% with the padding masked,
  two seeds each, caption accuracy equal within the seeds' spread).
  """
  emb, states = embed_text(clip_model, clip_params, tokens, token_mask)
  out = {"context": states, "context_mask": jnp.ones(token_mask.shape, bool)}
  if pooled:
    out["pooled"] = emb
  return out


def latents(model, params, images: jax.Array) -> jax.Array:
  """Unscaled latents [B, h, w, embed_dim] of images [B, H, W, C] in [-1, 1]: the KL posterior's mean (LDM
  draws a sample; with its 1e-6 KL weight the posterior is nearly a point) or the VQ model's pre-quantisation
  latent (LDM's VQ latent models run before the quantiser)."""
  if isinstance(model, autoencoder.AutoencoderKL):
    return model.apply({"params": params}, images, method=lambda m, x: m.encode(x).mode())
  return model.apply({"params": params}, images, method="encode")


def decode(model, variables, z: jax.Array) -> jax.Array:
  """Images [B, H, W, C] (float32, unclipped) of unscaled latents z [B, h, w, embed_dim]; variables: the
  params and, for a VQ model with an EMA codebook, its codebook (pipelines' Stage.variables)."""
  return model.apply(variables, z, method="decode")
