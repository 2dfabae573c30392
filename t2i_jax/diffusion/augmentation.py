"""Noise-conditioning augmentation of a cascade's low-resolution input (unCLIP §2.1, Imagen §2.5, CDM).

A super-resolution stage is trained on downsampled real images but sampled on
the previous stage's outputs, which differ from them. Corrupting the
low-resolution input during training, with the corruption level fed to the
network, makes the stage robust to that gap; at sampling time a fixed small
level is used. Two corruptions, both pure functions of explicit keys:

- Gaussian noise through the forward process: z = sqrt(ᾱ_s)·x + sqrt(1 − ᾱ_s)·ε
  at an augmentation timestep s of the stage's own schedule (Imagen's and CDM's
  form), so s can be embedded like any timestep;
- Gaussian blur with a random σ (unCLIP's first upsampler), training only.

Arrays are NHWC; levels are int32 [B] timesteps (0 = the first noising step).
"""

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion.schedules import Schedule


def noise_augment(s: Schedule, low_res: jax.Array, level: jax.Array, noise: jax.Array) -> jax.Array:
  """low_res [B, h, w, C] noised to augmentation timesteps level [B]: mean sqrt(ᾱ)·x, variance 1 − ᾱ."""
  return gaussian.q_sample(s, low_res, level, noise)


def sample_levels(key: jax.Array, batch_size: int, max_level: int) -> jax.Array:
  """int32 [B] augmentation timesteps drawn uniformly from {0, …, max_level} (training)."""
  return jax.random.randint(key, (batch_size,), 0, max_level + 1, dtype=jnp.int32)


def gaussian_kernel(sigma: jax.Array, radius: int) -> jax.Array:
  """Normalised 1-D Gaussian weights [B, 2·radius + 1] for σ [B]; σ = 0 gives the identity (a delta)."""
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma = jnp.asarray(sigma, jnp.float32)[:, None]
  logits = -0.5 * offsets[None] ** 2 / jnp.maximum(sigma, 1e-6) ** 2
  return jax.nn.softmax(logits, axis=-1)


def gaussian_blur(x: jax.Array, sigma: jax.Array, radius: int = 2) -> jax.Array:
  """x [B, H, W, C] blurred per example with σ [B] pixels (separable, edges replicated)."""
  kernel = gaussian_kernel(sigma, radius).astype(x.dtype)
  padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
  height, width = x.shape[1:3]
  rows = sum(kernel[:, i, None, None, None] * padded[:, i:i + height] for i in range(2 * radius + 1))
  return sum(kernel[:, i, None, None, None] * rows[:, :, i:i + width] for i in range(2 * radius + 1))


def augment_low_res(s: Schedule, low_res: jax.Array, key: jax.Array, *, max_level: int,
                    blur_sigma_max: float = 0.0):
  """Training-time corruption: (augmented low_res [B, h, w, C], levels int32 [B]).

  Blur with σ ~ U[0, blur_sigma_max] first (when > 0), then noise at a level ~ U{0, …, max_level}.
  """
  level_key, noise_key, blur_key = jax.random.split(key, 3)
  batch = low_res.shape[0]
  if blur_sigma_max > 0:
    low_res = gaussian_blur(low_res, jax.random.uniform(blur_key, (batch,), maxval=blur_sigma_max))
  level = sample_levels(level_key, batch, max_level)
  return noise_augment(s, low_res, level, jax.random.normal(noise_key, low_res.shape, low_res.dtype)), level
