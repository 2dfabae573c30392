"""Shared building blocks: embeddings, normalisation, attention, residual and transformer blocks.

Arrays are NHWC for images and [B, L, C] for sequences. Every block takes a
`dtype` for its activations (float32 or bfloat16) and keeps its params float32;
normalisation and softmax run in float32 whatever the activation dtype.

Parameter layouts follow ADM / GLIDE (openai/guided-diffusion, glide-text2im),
so a parameter count equals the reference's and weights convert one to one: a
fused qkv projection laid out head-major ([head][q, k, v][channel]), encoder
key/values likewise ([head][k, v][channel]).
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [cos, sin] of (possibly fractional) timesteps, [B] -> float32 [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class GroupNorm32(nn.Module):
  """GroupNorm(32 groups, eps 1e-5) computed in float32, output in `dtype`."""

  dtype: Dtype = jnp.float32
  num_groups: int = 32

  @nn.compact
  def __call__(self, x):
    y = nn.GroupNorm(num_groups=self.num_groups, epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32)(
        x.astype(jnp.float32))
    return y.astype(self.dtype)


class LayerNorm32(nn.Module):
  """LayerNorm (eps 1e-5) computed in float32, output in `dtype`."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32)(x.astype(jnp.float32)).astype(
        self.dtype)


def zeros_dense(features: int, dtype: Dtype, name: Optional[str] = None) -> nn.Dense:
  """A Dense layer initialised to zero: the block it ends starts as the identity."""
  return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.zeros, name=name)


def conv3x3(features: int, dtype: Dtype, stride: int = 1, zero: bool = False, name: Optional[str] = None) -> nn.Conv:
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), dtype=dtype,
                 kernel_init=nn.initializers.zeros if zero else nn.initializers.lecun_normal(), name=name)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Doubles H and W by repetition, [B, H, W, C] -> [B, 2H, 2W, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2(x: jax.Array) -> jax.Array:
  """Halves H and W by 2×2 averaging."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class Downsample(nn.Module):
  """A stride-2 3×3 conv (or 2×2 average pooling without a conv)."""

  use_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return conv3x3(x.shape[-1], self.dtype, stride=2)(x) if self.use_conv else avg_pool2(x)


class Upsample(nn.Module):
  """Nearest ×2 upsampling followed by an optional 3×3 conv."""

  use_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = upsample_nearest(x)
    return conv3x3(x.shape[-1], self.dtype)(x) if self.use_conv else x


class ResBlock(nn.Module):
  """ADM residual block conditioned on an embedding [B, E].

  norm → SiLU → (up/down) → conv → + emb (or AdaGN: norm(h)·(1 + s) + b) → SiLU →
  dropout → zero-initialised conv, plus a skip (1×1 conv when channels change).
  """

  out_channels: int
  dropout: float = 0.0
  use_scale_shift_norm: bool = True
  up: bool = False
  down: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, deterministic: bool = True):
    h = nn.silu(GroupNorm32(self.dtype, name="in_norm")(x))
    if self.up:
      h, x = upsample_nearest(h), upsample_nearest(x)
    elif self.down:
      h, x = avg_pool2(h), avg_pool2(x)
    h = conv3x3(self.out_channels, self.dtype, name="in_conv")(h)
    emb_out = nn.Dense(2 * self.out_channels if self.use_scale_shift_norm else self.out_channels, dtype=self.dtype,
                       name="emb_proj")(nn.silu(emb))[:, None, None, :]
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = GroupNorm32(self.dtype, name="out_norm")(h) * (1 + scale) + shift
    else:
      h = GroupNorm32(self.dtype, name="out_norm")(h + emb_out)
    h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=deterministic)
    h = conv3x3(self.out_channels, self.dtype, zero=True, name="out_conv")(h)
    if x.shape[-1] != self.out_channels:
      x = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype, name="skip")(x)
    return x + h


def attention(q, k, v, mask=None):
  """Multi-head attention over [B, L, H, D] (keys [B, S, H, D]) with a float32 softmax.

  mask: optional bool [B, 1 or H, L, S], True where attending is allowed.
  """
  # jax.nn.dot_product_attention forms the logits in at least float32 and takes the
  # softmax in float32 for bfloat16 inputs too (ADM did the same by hand).
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


class AttentionBlock(nn.Module):
  """Spatial self-attention over H·W positions, optionally also over encoder tokens.

  Encoder states [B, S, E] (GLIDE's text tokens, unCLIP's CLIP tokens, or any
  text encoder's output for cross-attention) are projected to per-head keys and
  values and prepended to the spatial ones, as GLIDE does.

  position_embedding: a learned [H·W, 2, C] table added to the spatial queries
  and keys (not the values), so that a place can ask for a word and a word's key
  can single out places. ADM and GLIDE have none: there a query knows its place
  only through what the convolutions left in its features.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  position_embedding: bool = False

  @nn.compact
  def __call__(self, x, context=None, context_mask=None):
    b, hgt, wid, c = x.shape
    heads, head_dim = self.num_heads, c // self.num_heads
    h = GroupNorm32(self.dtype, name="norm")(x).reshape(b, hgt * wid, c)
    qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv")(h).reshape(b, hgt * wid, heads, 3, head_dim)
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
    if self.position_embedding:
      # Unit std, the scale of q and k at init (unit features through a LeCun-normal projection).
      table = self.param("position_embedding", nn.initializers.normal(1.0), (hgt * wid, 2, c))
      table = table.astype(self.dtype).reshape(1, hgt * wid, 2, heads, head_dim)
      q, k = q + table[:, :, 0], k + table[:, :, 1]
    mask = None
    if context is not None:
      kv = nn.Dense(2 * c, dtype=self.dtype, name="encoder_kv")(context.astype(self.dtype))
      kv = kv.reshape(b, context.shape[1], heads, 2, head_dim)
      k = jnp.concatenate([kv[:, :, :, 0], k], axis=1)
      v = jnp.concatenate([kv[:, :, :, 1], v], axis=1)
      if context_mask is not None:
        keep = jnp.concatenate([context_mask.astype(bool), jnp.ones((b, hgt * wid), bool)], axis=1)
        mask = keep[:, None, None, :]
    h = attention(q, k, v, mask).reshape(b, hgt * wid, c)
    h = zeros_dense(c, self.dtype, name="proj_out")(h)
    return x + h.reshape(b, hgt, wid, c)


def quick_gelu(x):
  """x·sigmoid(1.702·x), the GELU approximation OpenAI CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


class TransformerBlock(nn.Module):
  """Pre-LayerNorm transformer block (GLIDE's text encoder, CLIP, the unCLIP prior).

  x + attn(ln_1(x)), then x + mlp(ln_2(x)) with a 4× MLP. `causal` masks
  attention to earlier positions; `mask` [B, L] marks valid (True) positions.
  activation: "gelu" (exact, GLIDE) or "quick_gelu" (x·σ(1.702x), OpenAI CLIP).
  """

  num_heads: int
  causal: bool = False
  activation: str = "gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    b, length, width = x.shape
    head_dim = width // self.num_heads
    h = LayerNorm32(self.dtype, name="ln_1")(x)
    qkv = nn.Dense(3 * width, dtype=self.dtype, name="c_qkv")(h).reshape(b, length, self.num_heads, 3, head_dim)
    allowed = None
    if self.causal:
      allowed = jnp.tril(jnp.ones((length, length), bool))[None, None]
    if mask is not None:
      keys = mask.astype(bool)[:, None, None, :]
      allowed = keys if allowed is None else allowed & keys
    h = attention(qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2], allowed).reshape(b, length, width)
    x = x + nn.Dense(width, dtype=self.dtype, name="c_proj")(h)
    h = LayerNorm32(self.dtype, name="ln_2")(x)
    h = nn.Dense(4 * width, dtype=self.dtype, name="c_fc")(h)
    h = quick_gelu(h) if self.activation == "quick_gelu" else nn.gelu(h, approximate=False)
    h = nn.Dense(width, dtype=self.dtype, name="mlp_proj")(h)
    return x + h


class Transformer(nn.Module):
  """A stack of `layers` TransformerBlocks over [B, L, width]; remat per block if asked."""

  layers: int
  num_heads: int
  causal: bool = False
  activation: str = "gelu"
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    block_cls = nn.remat(TransformerBlock) if self.remat else TransformerBlock
    for i in range(self.layers):
      x = block_cls(self.num_heads, self.causal, self.activation, self.dtype, name=f"block_{i}")(x, mask)
    return x


class TimestepMLP(nn.Module):
  """Sinusoidal embedding of t followed by Linear → SiLU → Linear to `features`."""

  base_channels: int
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t):
    emb = timestep_embedding(t, self.base_channels).astype(self.dtype)
    emb = nn.Dense(self.features, dtype=self.dtype, name="dense_0")(emb)
    return nn.Dense(self.features, dtype=self.dtype, name="dense_1")(nn.silu(emb))
