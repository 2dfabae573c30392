"""Vector quantisation (van den Oord et al., 2017): the VQ first stage's bottleneck (models/autoencoder.py).

Latent-diffusion's VQ models and DALL·E-style token models quantise a latent map against a learned codebook;
the codebook learns by its loss (taming-transformers' VectorQuantizer2) or by an exponential moving average
of the vectors assigned to each entry (the VQ-VAE paper's appendix A.1), selectable.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class VectorQuantizer(nn.Module):
  """z [B, h, w, D] -> (z_q [B, h, w, D] float32, aux): each vector replaced by its nearest codebook entry.

  z_q = z + stop_gradient(q - z): the forward value is q, the gradient passes to z unchanged. aux: indices
  [B, h, w] int32, commitment_loss = beta·mean((z - sg(q))²), codebook_loss = mean((sg(z) - q)²) (0 with
  ema=True), perplexity = exp(entropy of the batch's code usage).

  ema=False: the codebook is the param "codebook", trained by codebook_loss. ema=True: it lives in the
  "vq_stats" collection with the moving cluster sizes N and sums m, updated when called with
  update_codebook=True and mutable=["vq_stats"]: N ← γN + (1-γ)n, m ← γm + (1-γ)Σz, e = m / N', where N' is
  N Laplace-smoothed by epsilon so that an unused entry does not divide by zero.
  """

  num_embeddings: int
  embedding_dim: int
  beta: float = 0.25
  ema: bool = False
  decay: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, z, update_codebook: bool = False):
    k, d = self.num_embeddings, self.embedding_dim
    if z.shape[-1] != d:
      raise ValueError(f"z has {z.shape[-1]} channels; this quantiser's codebook has embedding_dim={d}.")
    init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0 / k, 1.0 / k)  # noqa: E731 (taming's)
    if self.ema:
      codebook = self.variable("vq_stats", "codebook", lambda: init(self.make_rng("params"), (k, d)))
      # As if each entry had been assigned once to its own initial value: the stats start consistent.
      size = self.variable("vq_stats", "cluster_size", lambda: jnp.ones((k,), jnp.float32))
      total = self.variable("vq_stats", "embed_sum", lambda: codebook.value)
      table = codebook.value
    else:
      table = self.param("codebook", init, (k, d))
    zf = z.astype(jnp.float32)
    flat = zf.reshape(-1, d)
    # ‖z - e‖² expanded, so the work is one [N, K] matmul rather than an [N, K, D] difference; at full float32
    # precision, because TPUs (bfloat16 passes) and GPUs (TF32) otherwise round it enough to pick wrong codes.
    cross = jnp.matmul(flat, table.T, precision=jax.lax.Precision.HIGHEST)
    dist = jnp.sum(flat**2, 1, keepdims=True) - 2.0 * cross + jnp.sum(table**2, 1)[None]
    indices = jnp.argmin(dist, axis=1).astype(jnp.int32)
    counts = jnp.bincount(indices, length=k).astype(jnp.float32)  # not a one-hot: [N, K] is large for K = 16384
    q = table[indices].reshape(zf.shape)
    usage = counts / flat.shape[0]
    aux = dict(
        indices=indices.reshape(z.shape[:-1]),
        commitment_loss=self.beta * jnp.mean((zf - jax.lax.stop_gradient(q)) ** 2),
        codebook_loss=jnp.zeros((), jnp.float32) if self.ema else jnp.mean((jax.lax.stop_gradient(zf) - q) ** 2),
        perplexity=jnp.exp(-jnp.sum(usage * jnp.log(usage + 1e-10))))
    if update_codebook:
      if not self.ema:
        raise ValueError("update_codebook=True needs ema=True; with ema=False codebook_loss trains the codebook.")
      if not self.is_mutable_collection("vq_stats"):
        raise ValueError('update_codebook=True changes the EMA codebook: apply with mutable=["vq_stats"].')
      if not self.is_initializing():
        g, flat = self.decay, jax.lax.stop_gradient(flat)
        size.value = g * size.value + (1 - g) * counts
        total.value = g * total.value + (1 - g) * jax.ops.segment_sum(flat, indices, k)
        n = size.value.sum()
        smoothed = (size.value + self.epsilon) / (n + k * self.epsilon) * n
        codebook.value = total.value / smoothed[:, None]
    return zf + jax.lax.stop_gradient(q - zf), aux
