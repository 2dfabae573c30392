"""GLIDE's text encoder: a bidirectional transformer over a fixed-length caption.

tokens int32 [B, L] (L <= context) → token states [B, L, width] and the state of
the last position [B, width], which GLIDE projects into the U-Net's timestep
embedding. With `padding_embedding` (GLIDE's released models), positions where
`mask` is False take a learned per-position embedding instead of token +
position; the caption is expected padded to the full context, so the last
position is a padding position, as in GLIDE.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.models import layers


def check_tokens(tokens: jax.Array, context_length: int) -> None:
  """Raises a ValueError unless tokens is [B, L] with L <= context_length."""
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be int [batch, length], got shape {tokens.shape}.")
  if tokens.shape[1] > context_length:
    raise ValueError(
        f"the token sequence has {tokens.shape[1]} tokens but the text encoder's context is "
        f"{context_length}; truncate the caption (the tokenizer's max_length) or raise text.context_length."
    )


class GlideTextEncoder(nn.Module):
  """The transformer text encoder of GLIDE (Nichol et al., 2022).

  Attributes mirror the GLIDE options: context_length (text_ctx), width
  (xf_width), layers (xf_layers), heads (xf_heads), final_ln (xf_final_ln),
  padding_embedding (xf_padding), vocab_size.
  """

  vocab_size: int
  context_length: int = 128
  width: int = 512
  layers: int = 16
  heads: int = 8
  final_ln: bool = True
  padding_embedding: bool = True
  # The pooled vector added to the timestep embedding: "last" is GLIDE's (the final position's
  # state, padding when the caption is shorter than the context); "mean" averages the real
  # tokens' final states; "bow" sums their input embeddings over sqrt(count) (a bag of words, which
  # tells captions apart from the first step on, before the transformer has learned anything);
  # "none" is zeros, so the caption reaches a U-Net through its attention layers only.
  pool: str = "last"
  # The std of the learned position table at init. Unit, like the tokens (see __call__); CLIP's 0.01
  # against unit tokens leaves the encoder a bag of words.
  position_init_std: float = 1.0
  # In training, the probability of zeroing an example's pooled vector, so that the caption must also
  # reach the U-Net through the tokens' keys/values (the only path that can say which word belongs to
  # which object; with a bag-of-words pool the shapes U-Net left that path unused, experiments/shapes_default).
  # Not rescaled: at sampling the pooled vector is always there.
  pool_dropout: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask=None, deterministic: bool = True):
    """Encodes tokens [B, L]; mask bool [B, L] (True = real token). Returns ([B, L, W], [B, W]).

    deterministic=False applies pool_dropout (needs a "dropout" rng).
    """
    check_tokens(tokens, self.context_length)
    if not 0.0 <= self.pool_dropout < 1.0:
      raise ValueError(f"pool_dropout={self.pool_dropout!r} must be in [0, 1): the probability of dropping "
                       "the pooled caption vector in training.")
    length = tokens.shape[1]
    # Tokens start at unit scale (torch.nn.Embedding's N(0, 1), GLIDE's token init), and by default
    # so do positions. With CLIP's 0.01 for positions against unit tokens, a position was 1% of the
    # encoder's input: the transformer stayed a bag of words, and "a red circle left of a blue square"
    # read exactly as "a blue circle left of a red square" after 16,000 steps (experiments/shapes_full).
    words = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(1.0),
                     name="token_embedding")(tokens)
    positions = self.param("positional_embedding", nn.initializers.normal(self.position_init_std),
                           (self.context_length, self.width))
    x = inputs = words + positions[None, :length]
    if self.padding_embedding:
      if mask is None:
        raise ValueError("this text encoder learns a padding embedding: pass the token mask (True = real token).")
      padding = self.param("padding_embedding", nn.initializers.normal(0.01), (self.context_length, self.width))[
          None, :length]
      x = jnp.where(mask[..., None], x, padding)
    x = layers.Transformer(self.layers, self.heads, remat=self.remat, dtype=self.dtype, name="transformer")(
        x.astype(self.dtype))
    if self.final_ln:
      x = layers.LayerNorm32(self.dtype, name="final_ln")(x)
    pooled = self._pool(x, inputs, mask)
    if self.pool_dropout and not deterministic:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.pool_dropout, (x.shape[0], 1))
      pooled = pooled * keep.astype(pooled.dtype)
    return x, pooled

  def _pool(self, x, inputs, mask):
    if self.pool == "last":
      return x[:, -1]
    if self.pool == "none":
      return jnp.zeros_like(x[:, 0])
    if self.pool not in ("mean", "bow"):
      raise ValueError(f"pool={self.pool!r}; use 'last' (GLIDE), 'mean' (masked mean of the real tokens' "
                       "states), 'bow' (their input embeddings summed over sqrt(count)) or 'none' (zeros).")
    weights = mask.astype(x.dtype)[..., None] if mask is not None else jnp.ones(x.shape[:2] + (1,), x.dtype)
    count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    if self.pool == "mean":
      return jnp.sum(x * weights, axis=1) / count
    # The input embeddings (token + position; with unit positions the positions add an offset set by
    # the caption's length). Sum / sqrt(count): the bag keeps the unit scale of one embedding, so
    # swapping one word moves it as much as a class label moves ADM's timestep embedding (a mean would
    # shrink that by the length).
    return jnp.sum(inputs.astype(x.dtype) * weights, axis=1) / jnp.sqrt(count)
