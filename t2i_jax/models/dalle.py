"""DALL·E (Ramesh et al., 2021): one decoder-only transformer over [caption tokens ; image tokens].

The caption's L tokens come first, each padding position with its own learned embedding (DALL·E's "learned
padding embedding per position": a missing word says where it is missing); then the image's N = side²
tokens of a frozen discrete tokenizer (a dVAE or a VQ model), in row-major order, with a row and a column
embedding. Attention is causal. Position p's output predicts the token at p + 1: the text head over the
caption's vocabulary for p < L − 1, the image head over the codebook for L − 1 <= p < L + N − 1.

One block function serves training and sampling: attention reads keys and values from a cache of the whole
sequence [B, T, H, D] (T = L + N) at which `x` is written at offset `start`, so a full forward pass is a
call at start 0 and decoding a token is a call at its position, and the two agree (tested).
"""

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.models.layers import LayerNorm32, quick_gelu

Dtype = Any


ATTENTION = ("full", "row", "column", "conv")


def attention_mask(kind: str, queries: jax.Array, length: int, text_len: int, side: int, kernel: int = 5) -> jax.Array:
  """bool [S, length]: which positions (keys 0 … length − 1) the query positions [S] attend to.

  Every kind is causal and sees the whole caption. For an image query, "full" sees every earlier code;
  the sparse kinds (Child et al.'s factorised attention, whose row and column masks DALL·E alternates, with a
  convolutional one in its last layer) see only some: "row" the last `side` codes (its row so far and the
  rest of the row above), "column" the codes above it in its column, "conv" those of the kernel × kernel
  window around it. A row layer followed by a column layer reaches every earlier code.
  """
  keys = jnp.arange(length)
  q, k = queries[:, None], keys[None, :]
  allowed = k <= q
  if kind == "full":
    return allowed
  iq, ik = q - text_len, k - text_len
  if kind == "row":
    image = iq - ik < side
  elif kind == "column":
    image = (iq - ik) % side == 0
  elif kind == "conv":
    half = kernel // 2
    image = (jnp.abs(iq // side - ik // side) <= half) & (jnp.abs(iq % side - ik % side) <= half)
  else:
    raise ValueError(f"attention kind {kind!r}; use one of {ATTENTION}.")
  # Text queries and text keys are as "full"; an image query's image keys are the kind's.
  return allowed & ((k < text_len) | (q < text_len) | image)


def empty_cache(batch: int, layers: int, length: int, heads: int, head_dim: int, dtype=jnp.float32) -> dict:
  """A zero key/value cache: dict(k, v) of [layers, B, length, H, D]."""
  shape = (layers, batch, length, heads, head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


class CachedBlock(nn.Module):
  """A pre-LayerNorm causal transformer block whose attention reads a key/value cache.

  x [B, S, W] are the positions start … start + S − 1; k_cache, v_cache [B, T, H, D] hold every earlier
  position's keys and values. Returns (x out, the caches with these positions written).
  """

  heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = "full"
  text_len: int = 0
  side: int = 1
  kernel: int = 5

  @nn.compact
  def __call__(self, x, k_cache, v_cache, start, deterministic: bool = True):
    b, s, width = x.shape
    head_dim = width // self.heads
    h = LayerNorm32(self.dtype, name="ln_1")(x)
    qkv = nn.Dense(3 * width, dtype=self.dtype, name="c_qkv")(h).reshape(b, s, 3, self.heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, start, 0, 0))
    v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, start, 0, 0))
    length = k_cache.shape[1]
    # Query i (absolute position start + i) reads keys 0 … start + i (the written past and itself), as
    # `attention` masks them.
    allowed = attention_mask(self.attention, start + jnp.arange(s), length, self.text_len, self.side, self.kernel)
    h = jax.nn.dot_product_attention(q, k_cache.astype(q.dtype), v_cache.astype(q.dtype),
                                     mask=allowed[None, None]).reshape(b, s, width)
    h = nn.Dense(width, dtype=self.dtype, name="c_proj")(h)
    x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = LayerNorm32(self.dtype, name="ln_2")(x)
    h = nn.Dense(width, dtype=self.dtype, name="mlp_proj")(quick_gelu(nn.Dense(4 * width, dtype=self.dtype,
                                                                              name="c_fc")(h)))
    x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return x, k_cache, v_cache


class DalleTransformer(nn.Module):
  """DALL·E's transformer at any size.

  Attributes:
    text_vocab: the caption tokenizer's vocabulary size.
    text_len: L, caption positions (the data's context_length).
    image_vocab: the image tokenizer's codebook size.
    image_side: the image token grid's side (N = side²).
    width, layers, heads: the transformer.
    dropout: residual dropout in training.
    attention: one kind per layer (ATTENTION, `attention_mask`), e.g. ("row", "column", "row", "conv");
      empty: every layer full.
    conv_kernel: the side of the "conv" kind's window.
  """

  text_vocab: int
  text_len: int
  image_vocab: int
  image_side: int
  width: int = 256
  layers: int = 4
  heads: int = 4
  dropout: float = 0.0
  attention: Tuple[str, ...] = ()
  conv_kernel: int = 5
  dtype: Dtype = jnp.float32

  @property
  def image_len(self) -> int:
    return self.image_side ** 2

  @property
  def seq_len(self) -> int:
    """T = L + N positions; the last image token is predicted, never fed, so a forward pass reads T − 1."""
    return self.text_len + self.image_len

  def setup(self):
    init = nn.initializers.normal(0.02)
    self.text_embed = nn.Embed(self.text_vocab, self.width, embedding_init=init, dtype=self.dtype)
    self.text_pos = self.param("text_pos", init, (self.text_len, self.width))
    self.text_pad = self.param("text_pad", init, (self.text_len, self.width))
    self.image_embed = nn.Embed(self.image_vocab, self.width, embedding_init=init, dtype=self.dtype)
    self.image_row = self.param("image_row", init, (self.image_side, self.width))
    self.image_col = self.param("image_col", init, (self.image_side, self.width))
    kinds = tuple(self.attention) or ("full",) * self.layers
    if len(kinds) != self.layers or set(kinds) - set(ATTENTION):
      raise ValueError(f"attention={tuple(self.attention)}: give one of {ATTENTION} for each of the {self.layers} "
                       "layers, or () for full attention everywhere.")
    self.blocks = [CachedBlock(self.heads, self.dropout, self.dtype, kind, self.text_len, self.image_side,
                               self.conv_kernel, name=f"block_{i}") for i, kind in enumerate(kinds)]
    self.ln_f = LayerNorm32(self.dtype)
    self.text_head = nn.Dense(self.text_vocab, dtype=self.dtype)
    self.image_head = nn.Dense(self.image_vocab, dtype=self.dtype)

  def _check(self, text, text_mask, image_tokens):
    if text.ndim != 2 or text.shape[1] != self.text_len:
      raise ValueError(f"text tokens have shape {tuple(text.shape)}; this transformer reads [B, {self.text_len}] "
                       "(data.context_length must equal model.text_len).")
    if text_mask.shape != text.shape:
      raise ValueError(f"text_mask has shape {tuple(text_mask.shape)}, the tokens {tuple(text.shape)}.")
    if image_tokens is not None and (image_tokens.ndim != 2 or image_tokens.shape[1] > self.image_len):
      raise ValueError(f"image tokens have shape {tuple(image_tokens.shape)}; a {self.image_side}×"
                       f"{self.image_side} grid is at most [B, {self.image_len}] tokens.")

  def embed_text(self, text, text_mask):
    """[B, L, W]: each real token's embedding, each padding position's own learned one, plus its position's."""
    tokens = self.text_embed(text)
    pad = jnp.broadcast_to(self.text_pad.astype(tokens.dtype), tokens.shape)
    return jnp.where(text_mask[..., None], tokens, pad) + self.text_pos.astype(tokens.dtype)

  def embed_image(self, image_tokens, offset):
    """[B, S, W] of image tokens at grid indices offset … offset + S − 1 (row-major), with row and column."""
    index = offset + jnp.arange(image_tokens.shape[1])
    pos = self.image_row[index // self.image_side] + self.image_col[index % self.image_side]
    return self.image_embed(image_tokens) + pos.astype(self.dtype)

  def run(self, x, cache, start, deterministic: bool = True):
    """The blocks over x [B, S, W] at positions start …; returns (final states [B, S, W], updated cache)."""
    ks, vs = [], []
    for i, block in enumerate(self.blocks):
      x, k, v = block(x, cache["k"][i], cache["v"][i], start, deterministic=deterministic)
      ks.append(k)
      vs.append(v)
    return self.ln_f(x), {"k": jnp.stack(ks), "v": jnp.stack(vs)}

  def cache(self, batch: int) -> dict:
    """An empty cache for `batch` sequences of this transformer."""
    return empty_cache(batch, self.layers, self.seq_len, self.heads, self.width // self.heads)

  def __call__(self, text, text_mask, image_tokens, deterministic: bool = True) -> Tuple[jax.Array, jax.Array]:
    """Teacher-forced logits of a whole sequence.

    Args:
      text: int32 [B, L] caption tokens; text_mask: bool [B, L], False at padding.
      image_tokens: int32 [B, N] the image's codes, row-major.

    Returns:
      (text_logits [B, L − 1, text_vocab] predicting text[:, 1:], image_logits [B, N, image_vocab]
      predicting image_tokens), float32.
    """
    self._check(text, text_mask, image_tokens)
    x = jnp.concatenate([self.embed_text(text, text_mask), self.embed_image(image_tokens[:, :-1], 0)], axis=1)
    h, _ = self.run(x, self.cache(text.shape[0]), 0, deterministic)
    text_logits = self.text_head(h[:, :self.text_len - 1])
    image_logits = self.image_head(h[:, self.text_len - 1:])
    return text_logits.astype(jnp.float32), image_logits.astype(jnp.float32)

  def prefill(self, text, text_mask):
    """(logits of the first image token [B, image_vocab], cache holding the caption's positions)."""
    self._check(text, text_mask, None)
    h, cache = self.run(self.embed_text(text, text_mask), self.cache(text.shape[0]), 0)
    return self.image_head(h[:, -1]).astype(jnp.float32), cache

  def decode(self, token, index, cache):
    """One step: feed image token `index` (int32 [B]) and get the logits of token index + 1 [B, image_vocab]
    and the cache with its position written."""
    x = self.embed_image(token[:, None], index)
    h, cache = self.run(x, cache, self.text_len + index)
    return self.image_head(h[:, 0]).astype(jnp.float32), cache


def null_text(batch: int, length: int) -> Tuple[jax.Array, jax.Array]:
  """The empty caption (every position padding): tokens zeros [B, L], mask False — the unconditional input of
  caption dropout and of super-conditioning."""
  return jnp.zeros((batch, length), jnp.int32), jnp.zeros((batch, length), bool)
