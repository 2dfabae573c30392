"""DALL·E's discrete VAE (Ramesh et al., 2021, §2.1): an image as a grid of codes from a K-entry codebook.

The encoder (latent-diffusion's, models/autoencoder.py) ends in K logits per position of the h × w grid. In
training, a code is a gumbel-softmax relaxation, y = softmax((logits + g) / τ), its embedding y @ codebook
[K, embed_dim]; τ is annealed towards 1/16, where y is nearly one-hot. Encoding for the transformer is the
argmax. The decoder reads the embeddings and outputs, per pixel and channel, the location μ and log-scale
log b of a logit-Laplace distribution on [ε, 1 − ε] (the paper's likelihood for pixels, which are bounded:
a Laplace on logit(x) puts no mass outside the interval, where an L1 or L2 loss would); the image is
(sigmoid(μ) − ε) / (1 − 2ε), mapped to [-1, 1].
"""

import jax
import jax.numpy as jnp

from t2i_jax.models.autoencoder import _FirstStage

# The paper's ε: pixel values are squeezed into [ε, 1 − ε] before the logit.
LOGIT_LAPLACE_EPS = 0.1


def relaxed_codes(logits: jax.Array, key: jax.Array, temperature) -> jax.Array:
  """The gumbel-softmax sample softmax((logits + g) / τ) [..., K], g ~ Gumbel(0, 1): one-hot as τ → 0."""
  gumbel = jax.random.gumbel(key, logits.shape, jnp.float32)
  return jax.nn.softmax((logits.astype(jnp.float32) + gumbel) / temperature, axis=-1)


def image_from_stats(stats: jax.Array) -> jax.Array:
  """The decoder's mean image [B, H, W, C] in [-1, 1] from its logit-Laplace stats [B, H, W, 2C] (μ first)."""
  mu = stats[..., :stats.shape[-1] // 2]
  x01 = (jax.nn.sigmoid(mu) - LOGIT_LAPLACE_EPS) / (1.0 - 2.0 * LOGIT_LAPLACE_EPS)
  return jnp.clip(x01, 0.0, 1.0) * 2.0 - 1.0


class DiscreteVAE(_FirstStage):
  """The dVAE: n_embed codes of width embed_dim on a resolution / f grid; out_channels = 2 · in_channels (μ
  and log b of each channel)."""

  n_embed: int = 512

  def setup(self):
    if self.out_channels != 2 * self.in_channels:
      raise ValueError(f"out_channels={self.out_channels}: the logit-Laplace decoder outputs μ and log b for each "
                       f"of the {self.in_channels} channels; set out_channels={2 * self.in_channels}.")
    self._setup_coders(double_z=False, moments=self.n_embed)
    self.codebook = self.param("codebook", jax.nn.initializers.normal(1.0), (self.n_embed, self.embed_dim))

  def logits(self, x, deterministic: bool = True):
    """Image [B, H, W, in_channels] in [-1, 1] -> float32 code logits [B, H/f, W/f, n_embed]."""
    self._check_image(x)
    return self.quant_conv(self.encoder(x, deterministic).astype(jnp.float32))

  def decode_codes(self, codes, deterministic: bool = True):
    """Code weights [B, h, w, n_embed] (one-hot or relaxed) -> logit-Laplace stats [B, H, W, 2·in_channels]."""
    return self.decode(codes @ self.codebook, deterministic)

  def encode_indices(self, x):
    """Image -> int32 codes [B, h, w]: each position's most likely code."""
    return jnp.argmax(self.logits(x), axis=-1).astype(jnp.int32)

  def decode_indices(self, indices):
    """int32 codes [B, h, w] -> image [B, H, W, in_channels] in [-1, 1]."""
    return image_from_stats(self.decode_codes(jax.nn.one_hot(indices, self.n_embed)))

  def relaxed(self, x, key, temperature, deterministic: bool = True):
    """Training's pass: (logit-Laplace stats [B, H, W, 2C], code logits [B, h, w, K]) with the codes relaxed
    at `temperature`."""
    logits = self.logits(x, deterministic)
    return self.decode_codes(relaxed_codes(logits, key, temperature), deterministic), logits

  def __call__(self, x, deterministic: bool = True):
    """(reconstruction [B, H, W, in_channels] in [-1, 1] through the argmax codes, dict(indices))."""
    indices = jnp.argmax(self.logits(x, deterministic), axis=-1)
    return image_from_stats(self.decode_codes(jax.nn.one_hot(indices, self.n_embed), deterministic)), {
        "indices": indices.astype(jnp.int32)}
