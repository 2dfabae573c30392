"""The ADM U-Net (Dhariwal & Nichol, 2021) with GLIDE, unCLIP and latent-diffusion conditioning.

x_t [B, H, W, C_in] and timesteps t [B] → [B, H, W, C_out] (C_out = 2·C when the
variance is learned: mean part first). Conditioning paths, each optional and
combinable:
- class labels y [B], with an extra null label (index num_classes) for CFG;
- GLIDE text: tokens [B, L] + mask through GlideTextEncoder; its last state,
  projected, joins the timestep embedding, and all its states become extra keys
  and values in every attention layer;
- unCLIP: a CLIP image embedding [B, D] projected into the timestep embedding and
  into `clip_tokens` extra context tokens after the text tokens;
- cross-attention to any frozen encoder's states: context [B, S, context_dim];
- a pooled text embedding [B, pooled_dim] (the frozen CLIP's, as SD-2's and SDXL's U-Nets add it)
  projected into the timestep embedding;
- super-resolution: low_res [B, h, w, C] upsampled bilinearly and concatenated to
  x_t, with an optional embedding of the noise-augmentation level;
- inpainting: masked image and mask as 4 extra input channels.

Block order and parameter layout follow openai/guided-diffusion and
glide-text2im, so the published configurations have exactly their parameter
counts (tests/models/test_unet.py).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.models import layers
from t2i_jax.models.text_encoder import GlideTextEncoder


class UNet(nn.Module):
  """ADM U-Net; see the module docstring. Fields mirror the config's model section."""

  image_size: int
  model_channels: int
  num_res_blocks: int
  attention_resolutions: Sequence[int]  # in pixels, e.g. (32, 16, 8) for a 64×64 model
  channel_mult: Sequence[int] = (1, 2, 4, 8)
  in_channels: int = 3
  out_channels: int = 3
  learn_sigma: bool = False
  dropout: float = 0.0
  num_heads: int = 1
  num_head_channels: int = -1  # > 0: heads = channels // num_head_channels
  use_scale_shift_norm: bool = True
  resblock_updown: bool = False
  conv_resample: bool = True
  num_classes: Optional[int] = None
  class_null: bool = False  # one more label row, the null label for classifier-free guidance
  text: Optional[dict] = None  # GlideTextEncoder fields
  clip_dim: Optional[int] = None
  clip_tokens: int = 4
  context_dim: Optional[int] = None
  pooled_dim: Optional[int] = None
  super_res: bool = False
  noise_aug_embedding: bool = False
  inpaint: bool = False
  patch_size: int = 1  # > 1: the network runs on non-overlapping p×p patches (space-to-depth)
  # CoordConv (Liu et al., 2018): two more input channels holding each pixel's x and y in [-1, 1].
  # Convolutions are translation-equivariant, so without them "top left" can only be located from
  # the zero padding, which a U-Net learns slowly.
  coord_channels: bool = False
  # A learned position table on every attention layer's queries and keys (layers.AttentionBlock), so
  # that text keys can meet places directly; the table is tied to the feature maps' size.
  attention_position_embedding: bool = False
  # The timestep the network embeds is t·timestep_scale: improved-diffusion's models were trained on
  # t·1000/T (its rescale_timesteps), so a converted one needs 1000/T (t2i_jax.convert.openai_unet).
  timestep_scale: float = 1.0
  remat: bool = False
  dtype: Any = jnp.float32

  # --- geometry ---------------------------------------------------------------

  @property
  def input_layout(self) -> tuple:
    """((name, channels), ...) of the first conv's input per pixel, in order (before space-to-depth): x_t,
    then the masked image and mask (inpainting), low_res (super-res), pixel coordinates."""
    c = self.in_channels
    parts = [("x", c)]
    if self.inpaint:
      parts += [("inpaint_image", c), ("inpaint_mask", 1)]
    if self.super_res:
      parts.append(("low_res", c))
    if self.coord_channels:
      parts.append(("coordinates", 2))
    return tuple(parts)

  @property
  def input_channels(self) -> int:
    """Channels of the first conv per pixel (`input_layout`'s total)."""
    return sum(width for _, width in self.input_layout)

  @property
  def feature_size(self) -> int:
    """Side of the first feature map: image_size / patch_size (attention_resolutions count in these pixels)."""
    return self.image_size // self.patch_size

  @property
  def output_channels(self) -> int:
    return self.out_channels * (2 if self.learn_sigma else 1)

  @property
  def context_width(self) -> Optional[int]:
    """Width of the tokens every attention layer also attends to (None: self-attention only)."""
    if self.text is not None:
      return self.text["width"]
    if self.context_dim is not None:
      return self.context_dim
    return 4 * self.model_channels if self.clip_dim is not None else None

  def check_config(self) -> None:
    """Raises a ValueError for an architecture that cannot be built."""
    if self.patch_size < 1 or self.image_size % self.patch_size:
      raise ValueError(f"patch_size={self.patch_size} must be a positive divisor of image_size={self.image_size}.")
    check_geometry(self.feature_size, self.channel_mult, self.attention_resolutions)
    if self.text is not None and self.context_dim is not None:
      raise ValueError("set either text (GLIDE's own encoder) or context_dim (an external encoder), not both.")
    if self.num_head_channels > 0:
      for mult in self.channel_mult:
        if (mult * self.model_channels) % self.num_head_channels:
          raise ValueError(
              f"{mult * self.model_channels} channels do not split into heads of {self.num_head_channels}."
          )

  def _heads(self, channels: int) -> int:
    return channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads

  def null_condition(self, batch_size: int = 1) -> dict:
    """The "dropped" value of each conditioning input (classifier-free guidance).

    The null label is index num_classes (needs class_null), empty text is all
    padding (mask False), a dropped CLIP embedding is zeros, and dropped context
    is one masked-out token [B, 1, context_dim] (broadcast to any length): the
    attention then reads the image's own positions only; a dropped pooled
    embedding is zeros.
    """
    null = {}
    if self.num_classes is not None:
      if not self.class_null:
        raise ValueError("dropping the label needs class_null=True (a null label row) in the model config.")
      null["y"] = jnp.full((batch_size,), self.num_classes, jnp.int32)
    if self.text is not None:
      length = self.text["context_length"]
      null["tokens"] = jnp.zeros((batch_size, length), jnp.int32)
      null["token_mask"] = jnp.zeros((batch_size, length), bool)
    if self.clip_dim is not None:
      null["clip_emb"] = jnp.zeros((batch_size, self.clip_dim), jnp.float32)
    if self.context_dim is not None:
      null["context"] = jnp.zeros((batch_size, 1, self.context_dim), jnp.float32)
      null["context_mask"] = jnp.zeros((batch_size, 1), bool)
    if self.pooled_dim is not None:
      null["pooled"] = jnp.zeros((batch_size, self.pooled_dim), jnp.float32)
    return null

  # --- inputs -----------------------------------------------------------------

  def _check_inputs(self, x, t, y, tokens, clip_emb, context, pooled, low_res, noise_aug_t):
    expected = (self.image_size, self.image_size, self.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(
          f"x has shape {tuple(x.shape)}; this U-Net expects [B, {self.image_size}, {self.image_size}, "
          f"{self.in_channels}] (NHWC; the conditioning channels are added by the model itself)."
      )
    if t.shape != (x.shape[0],):
      raise ValueError(f"t must be [B] = [{x.shape[0]}], got shape {t.shape}.")
    needed = dict(y=self.num_classes is not None, tokens=self.text is not None, clip_emb=self.clip_dim is not None,
                  context=self.context_dim is not None, pooled=self.pooled_dim is not None, low_res=self.super_res,
                  noise_aug_t=self.noise_aug_embedding)
    given = dict(y=y, tokens=tokens, clip_emb=clip_emb, context=context, pooled=pooled, low_res=low_res,
                 noise_aug_t=noise_aug_t)
    for name, need in needed.items():
      if need and given[name] is None:
        raise ValueError(f"this U-Net is conditioned on {name}: pass it (use the null value to drop the condition).")
      if not need and given[name] is not None:
        raise ValueError(f"{name} was given but this U-Net has no {name} conditioning; check the model config.")
    if low_res is not None and low_res.shape[-1] != self.in_channels:
      raise ValueError(f"low_res has {low_res.shape[-1]} channels; expected {self.in_channels}.")
    if clip_emb is not None and clip_emb.shape[-1] != self.clip_dim:
      raise ValueError(f"clip_emb has dimension {clip_emb.shape[-1]}; this U-Net expects clip_dim={self.clip_dim}.")
    if context is not None and context.shape[-1] != self.context_dim:
      raise ValueError(f"context has width {context.shape[-1]}; this U-Net expects context_dim={self.context_dim}.")
    if pooled is not None and pooled.shape != (x.shape[0], self.pooled_dim):
      raise ValueError(f"pooled has shape {tuple(pooled.shape)}; this U-Net expects [B, pooled_dim] = "
                       f"[{x.shape[0]}, {self.pooled_dim}].")

  def _assemble_input(self, x, low_res, inpaint_image, inpaint_mask):
    """The first conv's input [B, H, W, input_channels], laid out as `input_layout` says."""
    parts = [x]
    if self.inpaint:
      mask = jnp.zeros(x.shape[:-1] + (1,), x.dtype) if inpaint_mask is None else inpaint_mask.astype(x.dtype)
      image = jnp.zeros_like(x) if inpaint_image is None else inpaint_image.astype(x.dtype)
      parts += [image * mask, mask]
    if self.super_res:
      # Bilinear with half-pixel centres, as torch's interpolate(align_corners=False).
      parts.append(jax.image.resize(low_res.astype(x.dtype), x.shape, method="linear", antialias=False))
    if self.coord_channels:
      parts.append(jnp.broadcast_to(pixel_coordinates(*x.shape[1:3], x.dtype), x.shape[:3] + (2,)))
    return jnp.concatenate(parts, axis=-1)

  # --- the network ------------------------------------------------------------

  @nn.compact
  def __call__(self, x, t, *, y=None, tokens=None, token_mask=None, clip_emb=None, context=None,
               context_mask=None, pooled=None, low_res=None, noise_aug_t=None, inpaint_image=None, inpaint_mask=None,
               deterministic: bool = True):
    """Predicts [B, H, W, output_channels] (float32) from x_t [B, H, W, in_channels] and t [B]."""
    self.check_config()
    self._check_inputs(x, t, y, tokens, clip_emb, context, pooled, low_res, noise_aug_t)
    dtype, emb_dim = self.dtype, 4 * self.model_channels
    scaled = t if self.timestep_scale == 1.0 else jnp.asarray(t, jnp.float32) * self.timestep_scale
    emb = layers.TimestepMLP(self.model_channels, emb_dim, dtype, name="time_embed")(scaled)
    if self.num_classes is not None:
      emb = emb + nn.Embed(self.num_classes + int(self.class_null), emb_dim, embedding_init=nn.initializers.normal(1.0),
                           name="label_emb")(y).astype(dtype)
    if self.text is not None:
      context, last = GlideTextEncoder(**self.text, remat=self.remat, dtype=dtype, name="text_encoder")(
          tokens, token_mask, deterministic)
      emb = emb + nn.Dense(emb_dim, dtype=dtype, name="text_proj")(last)
      context_mask = None  # GLIDE attends to every position; padding has its own embedding
    if self.clip_dim is not None:
      emb = emb + nn.Dense(emb_dim, dtype=dtype, name="clip_proj")(clip_emb.astype(dtype))
      width = self.context_width
      clip_ctx = nn.Dense(self.clip_tokens * width, dtype=dtype, name="clip_tokens_proj")(clip_emb.astype(dtype))
      clip_ctx = clip_ctx.reshape(x.shape[0], self.clip_tokens, width)
      if context is None:
        context = clip_ctx
      else:
        if context_mask is not None:
          context_mask = jnp.concatenate([context_mask, jnp.ones(clip_ctx.shape[:2], bool)], axis=1)
        context = jnp.concatenate([context.astype(dtype), clip_ctx], axis=1)
    if self.pooled_dim is not None:
      emb = emb + nn.Dense(emb_dim, dtype=dtype, name="pooled_proj")(pooled.astype(dtype))
    if self.noise_aug_embedding:
      emb = emb + layers.TimestepMLP(self.model_channels, emb_dim, dtype, name="noise_aug_embed")(noise_aug_t)

    res_cls = nn.remat(layers.ResBlock, static_argnums=(3,)) if self.remat else layers.ResBlock
    attn_cls = nn.remat(layers.AttentionBlock) if self.remat else layers.AttentionBlock

    def res(h, channels, name, **kw):
      block = res_cls(channels, self.dropout, self.use_scale_shift_norm, dtype=dtype, name=name, **kw)
      return block(h, emb, deterministic)

    def attn(h, name):
      return attn_cls(self._heads(h.shape[-1]), dtype, self.attention_position_embedding, name=name)(
          h, context, context_mask)

    h = self._assemble_input(x.astype(dtype), low_res, inpaint_image, inpaint_mask)
    h = space_to_depth(h, self.patch_size)
    h, skips, resolution = encoder_half(self, h, res, attn)

    for level, mult in reversed(list(enumerate(self.channel_mult))):
      for i in range(self.num_res_blocks + 1):
        h = res(jnp.concatenate([h, skips.pop()], axis=-1), mult * self.model_channels, f"up_{level}_res_{i}")
        if resolution in self.attention_resolutions:
          h = attn(h, f"up_{level}_attn_{i}")
        if level and i == self.num_res_blocks:
          if self.resblock_updown:
            h = res(h, h.shape[-1], f"up_{level}_upsample", up=True)
          else:
            h = layers.Upsample(self.conv_resample, dtype, name=f"up_{level}_upsample")(h)
          resolution *= 2

    h = nn.silu(layers.GroupNorm32(dtype, name="out_norm")(h))
    out = layers.conv3x3(self.output_channels * self.patch_size**2, dtype, zero=True, name="out_conv")(h)
    return depth_to_space(out, self.patch_size).astype(jnp.float32)


def pixel_coordinates(height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """[H, W, 2]: each pixel centre's (x, y), from -1 at the left/top edge to 1 at the right/bottom edge."""
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height * 2 - 1
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width * 2 - 1
  return jnp.stack(jnp.meshgrid(xs, ys, indexing="xy"), axis=-1).astype(dtype)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/p, W/p, p·p·C]: each p×p patch becomes one position's channels."""
  if p == 1:
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
  """The inverse of space_to_depth: [B, h, w, p·p·C] -> [B, h·p, w·p, C]."""
  if p == 1:
    return x
  b, h, w, c = x.shape
  c //= p * p
  return x.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * p, w * p, c)


def check_geometry(image_size: int, channel_mult: Sequence[int], attention_resolutions: Sequence[int]) -> None:
  """Raises a ValueError unless the image halves once per level and every attention resolution occurs."""
  levels = len(channel_mult)
  if image_size % (2 ** (levels - 1)):
    raise ValueError(
        f"image_size={image_size} cannot be halved {levels - 1} times for channel_mult={tuple(channel_mult)}; "
        f"use a multiple of {2 ** (levels - 1)} or fewer levels."
    )
  reachable = [image_size // 2**i for i in range(levels)]
  missing = sorted(set(attention_resolutions) - set(reachable))
  if missing:
    raise ValueError(
        f"attention_resolutions {missing} never occur in this network, whose feature maps are {reachable} pixels."
    )


def encoder_half(module, h, res, attn):
  """The U-Net's input conv, downsampling path and middle block (shared with the classifier).

  Args:
    module: a UNet-like module (image_size, model_channels, channel_mult,
      num_res_blocks, attention_resolutions, resblock_updown, conv_resample, dtype).
    h: the assembled input [B, H, W, C_in].
    res: (h, channels, name, **updown) -> h, a ResBlock call bound to the embedding.
    attn: (h, name) -> h, an AttentionBlock call bound to the context.

  Returns:
    (h after the middle block, the skip activations, the final resolution).
  """
  h = layers.conv3x3(module.channel_mult[0] * module.model_channels, module.dtype, name="input_conv")(h)
  skips, resolution = [h], h.shape[1]
  for level, mult in enumerate(module.channel_mult):
    for i in range(module.num_res_blocks):
      h = res(h, mult * module.model_channels, f"down_{level}_res_{i}")
      if resolution in module.attention_resolutions:
        h = attn(h, f"down_{level}_attn_{i}")
      skips.append(h)
    if level != len(module.channel_mult) - 1:
      if module.resblock_updown:
        h = res(h, h.shape[-1], f"down_{level}_downsample", down=True)
      else:
        h = layers.Downsample(module.conv_resample, module.dtype, name=f"down_{level}_downsample")(h)
      skips.append(h)
      resolution //= 2
  h = res(h, h.shape[-1], "middle_res_0")
  h = attn(h, "middle_attn")
  h = res(h, h.shape[-1], "middle_res_1")
  return h, skips, resolution
