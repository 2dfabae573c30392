"""CLIP (Radford et al. 2021): a ViT image tower and a causal text tower in one embedding space.

The parameter layout is OpenAI CLIP's (openai/CLIP, model.py), so released weights
convert one to one and parameter counts match (ViT-B/32: 151,277,313):

  visual/conv1             patch embedding, kernel = stride = patch, no bias ([p, p, 3, W]; torch [W, 3, p, p])
  visual/class_embedding   [W]          visual/positional_embedding [(H/p)·(W/p) + 1, W]
  visual/ln_pre, visual/transformer/block_i, visual/ln_post, visual/proj [W, E] (no bias)
  text/token_embedding     [V, W]       text/positional_embedding [ctx, W]
  text/transformer/block_i, text/ln_final, text/text_projection [W, E] (no bias)
  logit_scale              scalar, initialised to log(1 / 0.07)

The fused qkv of each block is head-major (layers.TransformerBlock); torch's
in_proj is [q; k; v], so a converter permutes it.

Noised CLIP (GLIDE's CLIP guidance, openai/glide-text2im clip/encoders.py): with
`timestep_conditioned`, the image tower takes integer timesteps t [B] and the
class token is replaced by a learned per-timestep vector, row t of
`visual/timestep_embedding` [num_timesteps, W], exactly as GLIDE's ImageEmbedding
does (its `w_t` in place of `pred_state`). The timestep thus enters at one token
and reaches the others through attention; there is no class_embedding then.
GLIDE's noised CLIP also uses exact GELU (`activation="gelu"`) and has no key bias
(convert with a zero key bias); see `glide_noised_config`.

Images are NHWC [B, H, W, 3], already normalised with CLIP's channel statistics
(`normalize_images` maps the diffusion range [-1, 1] there). Embeddings come out
float32 and unnormalised; `contrastive_loss` and `cosine_similarity` normalise.
"""

import dataclasses
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2i_jax.models.layers import LayerNorm32, Transformer

Dtype = Any

# OpenAI CLIP's per-channel statistics of [0, 1] RGB (GLIDE stores the same ×255).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("quick_gelu", "gelu")
DTYPES = ("float32", "bfloat16")


def default_config() -> ml_collections.ConfigDict:
  """OpenAI's ViT-B/32 CLIP as a `config.model`-style section; `models.build` builds it.

  Shrink it for tests, e.g. image_size=16, patch_size=4, vision_width=32,
  vision_layers=2, vision_heads=2, text_ctx=8, vocab_size=64, text_width=32,
  text_layers=2, text_heads=2, embed_dim=16.
  """
  return ml_collections.ConfigDict(dict(
      name="clip", image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
      text_ctx=77, vocab_size=49408, text_width=512, text_layers=12, text_heads=8,
      embed_dim=512, timestep_conditioned=False, num_timesteps=1000,
      activation="quick_gelu", dtype="float32", remat=False))


def glide_noised_config() -> ml_collections.ConfigDict:
  """GLIDE's noised CLIP (glide-text2im clip/config.yaml): 64×64 images, patch 4, 1000 timesteps."""
  config = default_config()
  config.update(dict(
      image_size=64, patch_size=4, vision_width=768, vision_layers=12, vision_heads=12,
      text_ctx=77, vocab_size=65536, text_width=512, text_layers=12, text_heads=8, embed_dim=512,
      timestep_conditioned=True, num_timesteps=1000, activation="gelu"))
  return config


def _concrete(x) -> Optional[np.ndarray]:
  """`x` as numpy when its value is known now, None inside a trace (then nothing is value-checked)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_indices(name: str, x, size: int, fix: str) -> None:
  """Raises if a concrete integer array `x` has a value outside [0, size)."""
  values = _concrete(x)
  if values is not None and values.size and (values.min() < 0 or values.max() >= size):
    raise ValueError(f"{name} holds values in [{values.min()}, {values.max()}] but must lie in "
                     f"[0, {size - 1}]; {fix}")


class VisionTransformer(nn.Module):
  """CLIP's ViT image tower: [B, H, W, 3] (and t [B] when timestep-conditioned) -> float32 [B, E]."""

  image_size: int
  patch_size: int
  width: int
  layers: int
  heads: int
  output_dim: int
  timestep_conditioned: bool = False
  num_timesteps: int = 1000
  activation: str = "quick_gelu"
  remat: bool = False
  dtype: Dtype = jnp.float32

  def _check(self, images, t):
    if images.ndim != 4 or images.shape[-1] != 3:
      hint = " (it looks NCHW; transpose to NHWC)" if images.ndim == 4 and images.shape[1] == 3 else ""
      raise ValueError(f"images must be RGB NHWC [B, H, W, 3], got shape {tuple(images.shape)}{hint}; "
                       f"convert grayscale to 3 channels and drop any alpha channel.")
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"images are {images.shape[1]}×{images.shape[2]} but this CLIP was configured for "
                       f"{self.image_size}×{self.image_size}; resize them (e.g. jax.image.resize) or set "
                       f"image_size to match.")
    if self.timestep_conditioned:
      if t is None:
        raise ValueError("this image tower is timestep-conditioned (noised CLIP): pass the integer "
                         "timesteps t [B] of the noised images.")
      t = jnp.asarray(t)
      if t.shape != (images.shape[0],) or not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"t must be an integer vector [B] = [{images.shape[0]}] of timestep indices, got "
                         f"shape {tuple(t.shape)} dtype {t.dtype}; with a respaced schedule pass the "
                         f"original timesteps (timestep_map[t]).")
      _check_indices("t", t, self.num_timesteps, f"the model was built with num_timesteps={self.num_timesteps}.")
    elif t is not None:
      raise ValueError("t was given but this image tower is not timestep-conditioned; drop t, or build the "
                       "model with timestep_conditioned=True (a noised CLIP).")

  @nn.compact
  def __call__(self, images: jax.Array, t: Optional[jax.Array] = None) -> jax.Array:
    """Image embeddings (unnormalised, float32 [B, E]) of normalised images [B, H, W, 3]."""
    self._check(images, t)
    batch, scale = images.shape[0], self.width ** -0.5
    x = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, padding="VALID",
                use_bias=False, dtype=self.dtype, name="conv1")(images.astype(self.dtype))
    x = x.reshape(batch, -1, self.width)  # row-major patches, the order of torch's flatten(2)
    if self.timestep_conditioned:
      table = self.param("timestep_embedding", nn.initializers.normal(scale), (self.num_timesteps, self.width))
      first = jnp.take(table, jnp.asarray(t), axis=0)[:, None]
    else:
      cls = self.param("class_embedding", nn.initializers.normal(scale), (self.width,))
      first = jnp.broadcast_to(cls, (batch, 1, self.width))
    pos = self.param("positional_embedding", nn.initializers.normal(scale), (x.shape[1] + 1, self.width))
    x = jnp.concatenate([first.astype(self.dtype), x], axis=1) + pos.astype(self.dtype)
    x = LayerNorm32(self.dtype, name="ln_pre")(x)
    x = Transformer(layers=self.layers, num_heads=self.heads, causal=False, activation=self.activation,
                    remat=self.remat, dtype=self.dtype, name="transformer")(x)
    x = LayerNorm32(self.dtype, name="ln_post")(x[:, 0])
    proj = self.param("proj", nn.initializers.normal(scale), (self.width, self.output_dim))
    return (x @ proj.astype(self.dtype)).astype(jnp.float32)


class TextTransformer(nn.Module):
  """CLIP's causal text tower: int tokens [B, L], L <= context -> float32 [B, E]."""

  context: int
  vocab_size: int
  width: int
  layers: int
  heads: int
  output_dim: int
  activation: str = "quick_gelu"
  remat: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, eot_index: Optional[jax.Array] = None, return_states: bool = False):
    """Text embeddings (unnormalised, float32 [B, E]) read at the end-of-text position.

    With return_states, also every position's final (layer-normed) state,
    float32 [B, L, width]: the per-token encoding an unCLIP prior reads.

    Args:
      tokens: int [B, L], L <= context. Padding after the end-of-text token is
        ignored (attention is causal), so L may be shorter than the context.
      eot_index: optional int [B], the position of each sequence's last token
        (GLIDE's text_len - 1). Without it the position is argmax(tokens), OpenAI's
        convention: its end-of-text token has the largest id in the vocabulary and
        padding is 0. Give eot_index for a tokenizer where that is not so.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integer ids [B, L], got shape {tuple(tokens.shape)} dtype {tokens.dtype}.")
    batch, length = tokens.shape
    if length > self.context:
      raise ValueError(f"tokens have length {length} but the text context is {self.context}; tokenize with "
                       f"max_length={self.context} and truncation, or build the model with a longer text_ctx.")
    _check_indices("tokens", tokens, self.vocab_size, f"the vocabulary has {self.vocab_size} ids; "
                   "use the tokenizer this CLIP was trained with.")
    if eot_index is None:
      eot_index = jnp.argmax(tokens, axis=-1)
    else:
      eot_index = jnp.asarray(eot_index)
      if eot_index.shape != (batch,) or not jnp.issubdtype(eot_index.dtype, jnp.integer):
        raise ValueError(f"eot_index must be an integer vector [B] = [{batch}], got shape "
                         f"{tuple(eot_index.shape)} dtype {eot_index.dtype}.")
      _check_indices("eot_index", eot_index, length, f"it indexes the {length} token positions.")
    scale = self.width ** -0.5
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02), dtype=self.dtype,
                 name="token_embedding")(tokens)
    pos = self.param("positional_embedding", nn.initializers.normal(0.01), (self.context, self.width))
    x = x + pos[:length].astype(self.dtype)
    x = Transformer(layers=self.layers, num_heads=self.heads, causal=True, activation=self.activation,
                    remat=self.remat, dtype=self.dtype, name="transformer")(x)
    ln_final = LayerNorm32(self.dtype, name="ln_final")
    proj = self.param("text_projection", nn.initializers.normal(scale), (self.width, self.output_dim))
    if return_states:
      states = ln_final(x)
      pooled = states[jnp.arange(batch), eot_index]
      return (pooled @ proj.astype(self.dtype)).astype(jnp.float32), states.astype(jnp.float32)
    # LayerNorm acts per token, so normalising only the pooled one equals OpenAI's ln_final-then-gather.
    x = ln_final(x[jnp.arange(batch), eot_index])
    return (x @ proj.astype(self.dtype)).astype(jnp.float32)


class CLIP(nn.Module):
  """Image and text towers plus a learned temperature; fields as in `default_config`.

  Params are float32; activations run in `dtype` (LayerNorm and softmax in
  float32); the embeddings come out float32. `remat` rematerialises each
  transformer block in the backward pass.
  """

  image_size: int = 224
  patch_size: int = 32
  vision_width: int = 768
  vision_layers: int = 12
  vision_heads: int = 12
  text_ctx: int = 77
  vocab_size: int = 49408
  text_width: int = 512
  text_layers: int = 12
  text_heads: int = 8
  embed_dim: int = 512
  timestep_conditioned: bool = False
  num_timesteps: int = 1000
  activation: str = "quick_gelu"
  dtype: Dtype = "float32"
  remat: bool = False

  def __post_init__(self):
    # Checked at construction so that a bad config fails before any init or trace.
    for size_name, size in (("image_size", self.image_size), ("patch_size", self.patch_size)):
      if size <= 0:
        raise ValueError(f"{size_name}={size} must be positive.")
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                       f"use an image_size that is a multiple of the patch size (e.g. "
                       f"{self.image_size // self.patch_size * self.patch_size or self.patch_size}).")
    for tower, width, heads in (("vision", self.vision_width, self.vision_heads),
                                ("text", self.text_width, self.text_heads)):
      if width % heads:
        raise ValueError(f"{tower}_width={width} is not divisible by {tower}_heads={heads}; pick a head "
                         f"count that divides the width (OpenAI CLIP uses 64 channels per head).")
    try:
      dtype_name = jnp.dtype(self.dtype).name
    except TypeError:
      dtype_name = None
    if dtype_name not in DTYPES:
      raise ValueError(f"dtype={self.dtype!r} is not supported; use one of {DTYPES} (the activation dtype; "
                       f"params are always float32).")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation={self.activation!r} is not supported; use one of {ACTIVATIONS}.")
    if self.timestep_conditioned and self.num_timesteps <= 0:
      raise ValueError(f"num_timesteps={self.num_timesteps} must be positive for a timestep-conditioned CLIP.")
    super().__post_init__()

  def setup(self):
    dtype = jnp.dtype(self.dtype)  # the config names it as a string
    self.visual = VisionTransformer(
        self.image_size, self.patch_size, self.vision_width, self.vision_layers, self.vision_heads,
        self.embed_dim, self.timestep_conditioned, self.num_timesteps, self.activation, self.remat, dtype)
    self.text = TextTransformer(
        self.text_ctx, self.vocab_size, self.text_width, self.text_layers, self.text_heads, self.embed_dim,
        self.activation, self.remat, dtype)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())

  def encode_image(self, images: jax.Array, t: Optional[jax.Array] = None) -> jax.Array:
    """Unnormalised float32 [B, E] embeddings of images [B, H, W, 3] (t: int [B] for a noised CLIP)."""
    return self.visual(images, t)

  def encode_text(self, tokens: jax.Array, eot_index: Optional[jax.Array] = None) -> jax.Array:
    """Unnormalised float32 [B, E] embeddings of tokens int [B, L]; see TextTransformer for eot_index."""
    return self.text(tokens, eot_index)

  def encode_text_states(self, tokens: jax.Array, eot_index: Optional[jax.Array] = None):
    """(embeddings float32 [B, E], per-token states float32 [B, L, text_width]) of tokens int [B, L]."""
    return self.text(tokens, eot_index, return_states=True)

  def __call__(self, images: jax.Array, tokens: jax.Array, t: Optional[jax.Array] = None,
               eot_index: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Both towers: (image_emb [B, E], text_emb [B, E], logit_scale []), embeddings unnormalised.

    The tuple is the argument list of `contrastive_loss`, which normalises; the
    logit scale is the raw log-temperature parameter.
    """
    return self.encode_image(images, t), self.encode_text(tokens, eot_index), self.logit_scale


def eot_index_from_mask(token_mask: jax.Array) -> jax.Array:
  """int32 [B]: the position of each caption's last real token, from its bool mask [B, L].

  The text tower's `eot_index` for tokenizers whose end-of-text id is not the
  largest (the project's own and most Hugging Face ones), where OpenAI's
  argmax(tokens) rule does not apply.
  """
  return jnp.maximum(jnp.sum(jnp.asarray(token_mask).astype(jnp.int32), axis=-1) - 1, 0)


def normalize_images(images: jax.Array) -> jax.Array:
  """Maps diffusion-range images in [-1, 1], [B, H, W, 3], to CLIP's normalised input (float32)."""
  x = (jnp.asarray(images, jnp.float32) + 1.0) / 2.0
  return (x - jnp.asarray(IMAGE_MEAN)) / jnp.asarray(IMAGE_STD)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / (‖x‖ + eps) along the last axis, in float32 (GLIDE's form: finite at x = 0)."""
  x = jnp.asarray(x, jnp.float32)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of [..., E] and [..., E] -> [...] (CLIP score = w·max(cos, 0))."""
  return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array,
                     max_scale: Optional[float] = 100.0) -> jax.Array:
  """CLIP's symmetric InfoNCE loss; pair i is (image_emb[i], text_emb[i]).

  Args:
    image_emb: [B, E], unnormalised (normalised here).
    text_emb: [B, E], unnormalised.
    logit_scale: scalar log-temperature; the logits are exp(logit_scale)·cos.
    max_scale: exp(logit_scale) is clipped to this (100 in the CLIP paper, to keep
      training stable); None leaves it unclipped.

  Returns:
    float32 scalar: the mean of the image→text and text→image cross-entropies.
    Under jit on a sharded global batch, every image is contrasted with every text
    of the global batch.
  """
  scale = jnp.exp(jnp.asarray(logit_scale, jnp.float32))
  if max_scale is not None:
    scale = jnp.minimum(scale, max_scale)
  logits = scale * l2_normalize(image_emb) @ l2_normalize(text_emb).T
  diag = jnp.arange(logits.shape[0])
  image_to_text = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[diag, diag])
  text_to_image = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[diag, diag])
  return (image_to_text + text_to_image) / 2


@dataclasses.dataclass(frozen=True)
class _ClipGuidance:
  """A noised CLIP's guidance gradient as a hashable callable (params, text_emb, scale, x_t, t, cond)."""
  model: CLIP

  def __call__(self, params, text_emb, scale, x_t, t, cond):
    del cond  # the U-Net's conditioning; CLIP guidance reads its own text embedding

    def score(x):
      image_emb = l2_normalize(self.model.apply({"params": params}, normalize_images(x), t, method="encode_image"))
      return jnp.exp(params["logit_scale"]) * jnp.sum(image_emb * text_emb)

    return scale * jax.grad(score)(x_t)


def guidance_grad_fn(model: CLIP, params, text_emb: jax.Array, scale) -> jax.tree_util.Partial:
  """GLIDE's CLIP guidance (§2.3) as a samplers.sample grad_fn: (x_t, t, cond) -> scale·∇_{x_t} of
  exp(logit_scale)·⟨f(x_t, t), g(c)⟩, f and g the l2-normalised image and text embeddings, summed over the
  batch (each row's gradient is its own). The reverse step's mean moves by Σ times it (`condition_mean`).

  model must be timestep-conditioned (a noised CLIP trained on the sampled U-Net's schedule; the sampler
  passes original timesteps). text_emb [B, E]: the prompts' text embeddings (unnormalised). params,
  text_emb and scale are Partial leaves, so new prompts, scales or CLIP weights reuse the compiled loop.
  """
  if not model.timestep_conditioned:
    raise ValueError("CLIP guidance needs a noised CLIP (timestep_conditioned=True) that reads x_t; this "
                     "CLIP reads clean images only (train configs/shapes_noised_clip.py).")
  return jax.tree_util.Partial(_ClipGuidance(model), params, l2_normalize(text_emb), jnp.float32(scale))
