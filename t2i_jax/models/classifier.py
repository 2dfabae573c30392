"""The noisy classifier of classifier guidance (Dhariwal & Nichol, 2021, §4).

The U-Net's encoder half — input conv, downsampling path and middle block, all
conditioned on the timestep — followed by GroupNorm, SiLU and attention pooling
(CLIP's AttentionPool2d: the mean token attends over all positions) to logits.
(x_t [B, H, W, C], t [B]) → logits [B, num_classes]; its ∇_x log softmax(logits)[y],
scaled, is the grad_fn that samplers.sample takes.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.models import layers
from t2i_jax.models.unet import check_geometry, encoder_half


class AttentionPool(nn.Module):
  """Attention pooling over H·W positions, [B, H, W, C] -> [B, out_features].

  A mean token is prepended, a learned positional embedding added, and the
  output is the mean token after one multi-head self-attention.
  """

  num_heads: int
  out_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    tokens = jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)
    pos = self.param("positional_embedding", nn.initializers.normal(c**-0.5), (h * w + 1, c))
    tokens = tokens + pos[None].astype(self.dtype)
    head_dim = c // self.num_heads
    qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv")(tokens).reshape(b, h * w + 1, self.num_heads, 3, head_dim)
    out = layers.attention(qkv[:, :1, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]).reshape(b, c)
    return nn.Dense(self.out_features, dtype=self.dtype, name="c_proj")(out)


class NoisyClassifier(nn.Module):
  """Timestep-conditioned image classifier; fields as in UNet (see unet.py)."""

  image_size: int
  model_channels: int
  num_res_blocks: int
  attention_resolutions: Sequence[int]
  num_classes: int
  channel_mult: Sequence[int] = (1, 2, 4, 8)
  in_channels: int = 3
  dropout: float = 0.0
  num_head_channels: int = 64
  use_scale_shift_norm: bool = True
  resblock_updown: bool = True
  conv_resample: bool = True
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, t, *, deterministic: bool = True):
    """Logits [B, num_classes] (float32) for x_t [B, H, W, in_channels] at timesteps t [B]."""
    expected = (self.image_size, self.image_size, self.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(f"x has shape {tuple(x.shape)}; this classifier expects [B, *{expected}] (NHWC).")
    check_geometry(self.image_size, self.channel_mult, self.attention_resolutions)
    dtype = self.dtype
    emb = layers.TimestepMLP(self.model_channels, 4 * self.model_channels, dtype, name="time_embed")(t)
    res_cls = nn.remat(layers.ResBlock, static_argnums=(3,)) if self.remat else layers.ResBlock

    def res(h, channels, name, **kw):
      block = res_cls(channels, self.dropout, self.use_scale_shift_norm, dtype=dtype, name=name, **kw)
      return block(h, emb, deterministic)

    def attn(h, name):
      return layers.AttentionBlock(h.shape[-1] // self.num_head_channels, dtype, name=name)(h)

    h, _, _ = encoder_half(self, x.astype(dtype), res, attn)
    h = nn.silu(layers.GroupNorm32(dtype, name="out_norm")(h))
    heads = h.shape[-1] // self.num_head_channels
    return AttentionPool(heads, self.num_classes, dtype, name="pool")(h).astype(jnp.float32)


def classifier_grad_fn(apply_fn, scale: float):
  """A samplers.sample grad_fn: scale·∇_x log p(y | x_t) from a classifier.

  Args:
    apply_fn: (x_t, t) -> logits [B, K] (e.g. a bound classifier apply).
    scale: the classifier-guidance scale s.

  Returns:
    (x_t, t, cond) -> gradient like x_t, with cond["y"] int [B] the target classes.
  """

  def grad_fn(x_t, t, cond):
    def log_prob(x):
      logp = jax.nn.log_softmax(apply_fn(x, t), axis=-1)
      return jnp.take_along_axis(logp, cond["y"][:, None], axis=-1).sum()

    return scale * jax.grad(log_prob)(x_t)

  return grad_fn
