"""The unCLIP / DALL·E 2 diffusion prior: text → CLIP image embedding (Ramesh et al., 2022).

A decoder-only transformer with a causal mask (§2.2, Appendix C) reads, in order,

  [ text tokens (L) | CLIP text emb | timestep emb | noised image emb z_t | query ]

and the output at the final (query) token, layer-normed and projected to the CLIP
dimension E, is the prediction of the unnoised image embedding z_0: the core's
mean_type="x0" with a fixed variance (the paper found x0 prediction with an MSE
loss better than eps prediction for the prior).

Choices where the paper leaves room (they match lucidrains/DALLE2-pytorch's
DiffusionPriorNetwork unless said otherwise):
- Every input is projected to `width` by its own Dense layer; the timestep goes
  through the sinusoidal embedding (max period 10000, so any t in [0, T) with
  T ≤ ~10000 is fine and no num_timesteps is needed) and a two-layer MLP.
- A learned positional embedding over text_ctx + 4 slots: text token i takes
  slot i, the four trailing tokens always take slots text_ctx..text_ctx+3, so
  their positions do not move with the text length L ≤ text_ctx. (DALLE2-pytorch
  uses rotary embeddings instead.)
- Padding: `text_mask` [B, L] is a key mask, so no position attends to a padded
  token and a padded token's value cannot reach the output. (DALLE2-pytorch
  instead overwrites padded tokens with its learned null tokens.)
- Null text for classifier-free guidance: where `drop_text` is True, the
  projected text token states are *replaced* by learned null token states
  (param `null_text_tokens` [text_ctx, width], the first L of them), every one
  of them attended to (the row's text_mask is ignored), and the projected text
  embedding by a learned `null_text_emb` [width]. The substitution happens after
  the input projections, so a dropped row's output does not depend on
  text_emb, text_tokens or text_mask at all, only on their length L. Training
  drops rows at random with this flag; `null_cond` builds the condition with it
  set, which is exactly what guidance.classifier_free runs for the
  unconditional half.

The prior's inputs are CLIP embeddings as the training code scales them (unCLIP
normalises them; DALLE2-pytorch uses l2-normalised embeddings times sqrt(E));
this module does no scaling of its own.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax.tree_util import Partial

from t2i_jax.models.apply import denoise_fn
from t2i_jax.models.layers import LayerNorm32, TimestepMLP, Transformer

Dtype = Any
NUM_TRAILING = 4  # text embedding, timestep, z_t, query


class DiffusionPrior(nn.Module):
  """Causal-transformer diffusion prior predicting z_0 [B, E] (see the module docstring).

  Attributes:
    clip_dim: E, the CLIP embedding dimension (input z_t, text_emb and output).
    width: transformer width.
    layers: number of transformer blocks.
    heads: attention heads (width % heads == 0).
    text_ctx: the most text tokens accepted (L ≤ text_ctx).
    text_dim: D_text, the width of the text encoder's per-token states.
    dropout: dropout on the input sequence when not deterministic (rng "dropout").
    remat: rematerialise each transformer block in the backward pass.
    dtype: activation dtype; params are float32, the output is float32.
  """

  clip_dim: int
  width: int
  layers: int
  heads: int
  text_ctx: int
  text_dim: int
  dropout: float = 0.0
  remat: bool = False
  dtype: Dtype = jnp.float32

  def setup(self):
    # Submodules take their param names from these attributes.
    self.text_tokens_proj = nn.Dense(self.width, dtype=self.dtype)
    self.text_emb_proj = nn.Dense(self.width, dtype=self.dtype)
    self.image_proj = nn.Dense(self.width, dtype=self.dtype)
    self.time_embed = TimestepMLP(self.width, self.width, self.dtype)
    # Unit-variance init: the same scale as a Dense projection of unit-variance inputs,
    # so the learned tokens neither vanish nor dominate the pre-LN residual stream.
    unit = nn.initializers.normal(1.0)
    self.query = self.param("query", unit, (self.width,))
    self.null_text_tokens = self.param("null_text_tokens", unit, (self.text_ctx, self.width))
    self.null_text_emb = self.param("null_text_emb", unit, (self.width,))
    self.pos_emb = self.param("pos_emb", nn.initializers.normal(0.01), (self.text_ctx + NUM_TRAILING, self.width))
    self.transformer = Transformer(self.layers, self.heads, causal=True, activation="gelu", remat=self.remat,
                                   dtype=self.dtype)
    self.final_ln = LayerNorm32(self.dtype)
    self.out_proj = nn.Dense(self.clip_dim, dtype=self.dtype)
    self.input_dropout = nn.Dropout(self.dropout)

  def _check_inputs(self, z_t, t, text_emb, text_tokens, text_mask, drop_text):
    if self.width % self.heads:
      raise ValueError(f"width={self.width} is not divisible by heads={self.heads}; pick a width that splits.")
    b, e = z_t.shape[0], self.clip_dim
    if z_t.ndim != 2 or z_t.shape[1] != e:
      raise ValueError(f"z_t must be [B, clip_dim={e}], got shape {tuple(z_t.shape)}; check config.clip_dim.")
    if text_emb.shape != (b, e):
      raise ValueError(f"text_emb must be [B={b}, clip_dim={e}], got shape {tuple(text_emb.shape)}.")
    if jnp.shape(t) != (b,):
      raise ValueError(f"t must be [B={b}] timestep indices, got shape {tuple(jnp.shape(t))}.")
    if text_tokens.ndim != 3 or text_tokens.shape[0] != b or text_tokens.shape[2] != self.text_dim:
      raise ValueError(f"text_tokens must be [B={b}, L, text_dim={self.text_dim}], got shape "
                       f"{tuple(text_tokens.shape)}; check config.text_dim against the text encoder's width.")
    if text_tokens.shape[1] > self.text_ctx:
      raise ValueError(f"text_tokens has {text_tokens.shape[1]} tokens but text_ctx={self.text_ctx}; truncate "
                       f"the captions or raise config.text_ctx.")
    if text_mask is not None and text_mask.shape != text_tokens.shape[:2]:
      raise ValueError(f"text_mask must be [B, L]={tuple(text_tokens.shape[:2])}, got {tuple(text_mask.shape)}.")
    if drop_text is not None and jnp.shape(drop_text) != (b,):
      raise ValueError(f"drop_text must be a bool [B={b}], got shape {tuple(jnp.shape(drop_text))}.")

  def hidden_states(self, z_t, t, text_emb, text_tokens, text_mask=None, drop_text=None, deterministic=True):
    """The transformer's output at every position, float [B, L + 4, width] (before final_ln).

    Positions 0..L-1 are the text tokens, then text embedding, timestep, z_t and
    the query (last). Arguments as in __call__. Exposed so tests can check causality.
    """
    self._check_inputs(z_t, t, text_emb, text_tokens, text_mask, drop_text)
    b, length = text_tokens.shape[:2]
    tokens = self.text_tokens_proj(text_tokens.astype(self.dtype))
    emb = self.text_emb_proj(text_emb.astype(self.dtype))
    mask = jnp.ones((b, length), bool) if text_mask is None else text_mask.astype(bool)
    if drop_text is not None:
      drop = jnp.asarray(drop_text, bool)
      # jnp.where, not a multiply: a dropped row's inputs (even NaN) never reach the output.
      tokens = jnp.where(drop[:, None, None], self.null_text_tokens[None, :length].astype(self.dtype), tokens)
      emb = jnp.where(drop[:, None], self.null_text_emb[None].astype(self.dtype), emb)
      mask = mask | drop[:, None]
    trailing = jnp.stack([
        emb,
        self.time_embed(t),
        self.image_proj(z_t.astype(self.dtype)),
        jnp.broadcast_to(self.query.astype(self.dtype), (b, self.width)),
    ], axis=1)
    x = jnp.concatenate([tokens, trailing], axis=1)
    pos = jnp.concatenate([self.pos_emb[:length], self.pos_emb[self.text_ctx:]], axis=0)
    x = x + pos[None].astype(self.dtype)
    x = self.input_dropout(x, deterministic=deterministic)
    # Trailing tokens are always attended to; a padded text token never is.
    mask = jnp.concatenate([mask, jnp.ones((b, NUM_TRAILING), bool)], axis=1)
    return self.transformer(x, mask)

  def __call__(self, z_t, t, text_emb, text_tokens, text_mask=None, drop_text=None, deterministic=True):
    """Predicts the unnoised CLIP image embedding.

    Args:
      z_t: noised CLIP image embedding [B, E].
      t: timestep indices [B] (int, or float for fractional steps).
      text_emb: CLIP text embedding [B, E].
      text_tokens: text encoder per-token states [B, L, D_text], L ≤ text_ctx.
      text_mask: optional bool [B, L], True on real tokens (None: all real).
      drop_text: optional bool [B]; True rows use the learned null text (CFG).
      deterministic: False applies dropout (needs the "dropout" rng).

    Returns:
      float32 [B, E]: the predicted z_0.
    """
    h = self.hidden_states(z_t, t, text_emb, text_tokens, text_mask, drop_text, deterministic)
    return self.out_proj(self.final_ln(h[:, -1])).astype(jnp.float32)


def make_cond(text_emb, text_tokens, text_mask=None, drop_text=None) -> dict:
  """The prior's `cond` pytree: dict(text_emb [B, E], text_tokens [B, L, D], text_mask [B, L], drop_text [B]).

  text_mask defaults to all True and drop_text to all False, so that every
  condition (and its null_cond) has the same tree structure, as guidance needs.
  """
  b, length = text_tokens.shape[:2]
  return {
      "text_emb": text_emb,
      "text_tokens": text_tokens,
      "text_mask": jnp.ones((b, length), bool) if text_mask is None else jnp.asarray(text_mask, bool),
      "drop_text": jnp.zeros((b,), bool) if drop_text is None else jnp.asarray(drop_text, bool),
  }


def null_cond(cond: dict) -> dict:
  """The unconditional condition (batch 1) for guidance.classifier_free: drop_text True.

  Its text values are zeros; the model never reads them for a dropped row.
  """
  return {
      "text_emb": jnp.zeros((1,) + cond["text_emb"].shape[1:], cond["text_emb"].dtype),
      "text_tokens": jnp.zeros((1,) + cond["text_tokens"].shape[1:], cond["text_tokens"].dtype),
      "text_mask": jnp.ones((1,) + cond["text_mask"].shape[1:], bool),
      "drop_text": jnp.ones((1,), bool),
  }


def make_denoise_fn(model: DiffusionPrior, params) -> Partial:
  """A core denoise_fn (x_t [B, E], t [B], cond) -> predicted z_0 [B, E] (mean_type "x0").

  cond is make_cond's dict; params are leaves of the returned Partial, so a
  jitted sampler takes new params without recompiling.
  """
  return denoise_fn(model, params)
