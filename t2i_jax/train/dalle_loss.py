"""The training loss of DALL·E's transformer (Ramesh et al., 2021, §2.2): cross-entropy on the caption's and
the image's tokens, the text term weighted 1/8 and the image term 7/8.

Each term is the mean over its own tokens (the caption's real tokens, every image token), so the weights are
what each modality contributes whatever the lengths. A caption is dropped at rate p_drop_text (every position
becomes padding) for super-conditioning at sampling; a dropped caption has no text term.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from t2i_jax.models import dalle


def token_losses(text_logits, image_logits, text, text_mask, image_tokens) -> dict:
  """(text, image) mean cross-entropies in nats: text_logits [B, L − 1, Vt] against text[:, 1:] where the
  mask is set, image_logits [B, N, Vi] against image_tokens [B, N]."""
  text_ce = optax.softmax_cross_entropy_with_integer_labels(text_logits, text[:, 1:])
  weight = text_mask[:, 1:].astype(jnp.float32)
  text_loss = jnp.sum(text_ce * weight) / jnp.maximum(jnp.sum(weight), 1.0)
  image_loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(image_logits, image_tokens))
  return {"text_loss": text_loss, "image_loss": image_loss}


def make_loss_fn(model, text_weight: float = 1.0 / 8.0, p_drop_text: float = 0.0) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux).

  batch: dict(image_tokens int32 [B, N] (the frozen tokenizer's codes), cond=dict(tokens [B, L],
  token_mask [B, L])). loss = text_weight·text_loss + (1 − text_weight)·image_loss.
  """

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    del loss_history, step
    text, mask = batch["cond"]["tokens"], batch["cond"]["token_mask"].astype(bool)
    drop_rng, dropout_rng = jax.random.split(rng)
    drop = jax.random.uniform(drop_rng, (text.shape[0],)) < p_drop_text
    null, null_mask = dalle.null_text(*text.shape)
    text = jnp.where(drop[:, None], null, text)
    mask = jnp.where(drop[:, None], null_mask, mask)
    text_logits, image_logits = model.apply({"params": params}, text, mask, batch["image_tokens"],
                                            deterministic=False, rngs={"dropout": dropout_rng})
    terms = token_losses(text_logits, image_logits, text, mask, batch["image_tokens"])
    loss = text_weight * terms["text_loss"] + (1.0 - text_weight) * terms["image_loss"]
    accuracy = jnp.mean(jnp.argmax(image_logits, -1) == batch["image_tokens"])
    return loss, dict(metrics=dict(loss=loss, image_token_accuracy=accuracy, **terms))

  return loss_fn
