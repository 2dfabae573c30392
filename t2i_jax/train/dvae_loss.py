"""The training loss of DALL·E's discrete VAE (Ramesh et al., 2021, §2.1 and appendix A.2).

The negative evidence lower bound with a β-weighted KL: per image, the logit-Laplace negative log-likelihood
of its pixels given the relaxed codes plus β times the KL from the encoder's code distribution to the uniform
prior over the K codes, both divided by the image's H·W·C values (the paper sums both; dividing both keeps
their ratio and the learning rate's scale). β ramps linearly from 0 to dvae.kl_weight over
dvae.kl_warmup_steps (the paper: 6.6 over the first 5,000 of its updates); the relaxation's temperature
falls from 1 to dvae.temperature_end on a cosine over dvae.temperature_steps (the paper: 1/16 over 150,000).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from t2i_jax.models import dvae


def logit_laplace_nll(images: jax.Array, stats: jax.Array) -> jax.Array:
  """Per-image mean negative log-likelihood in nats [B] of images [B, H, W, C] in [-1, 1] under the decoder's
  logit-Laplace stats [B, H, W, 2C] (μ, then log b), on pixels squeezed into [ε, 1 − ε]."""
  eps = dvae.LOGIT_LAPLACE_EPS
  channels = images.shape[-1]
  mu, log_b = stats[..., :channels], stats[..., channels:]
  x = (1.0 - 2.0 * eps) * (images.astype(jnp.float32) + 1.0) / 2.0 + eps
  logit = jnp.log(x) - jnp.log1p(-x)
  # The density of x: Laplace(logit x; μ, b) times |d logit / dx| = 1 / (x (1 − x)).
  nll = jnp.log(2.0) + log_b + jnp.abs(logit - mu) * jnp.exp(-log_b) + jnp.log(x) + jnp.log1p(-x)
  return jnp.mean(nll, axis=(1, 2, 3))


def kl_to_uniform(logits: jax.Array) -> jax.Array:
  """Σ over positions of KL(q ‖ uniform over K) [B] for code logits [B, h, w, K]: Σ q log q + log K."""
  log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + jnp.log(float(logits.shape[-1]))
  return jnp.sum(kl, axis=(1, 2))


def temperature_at(step, settings) -> jax.Array:
  """τ at a training step: a cosine from 1 to settings.temperature_end over settings.temperature_steps."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(settings.temperature_steps, 1), 0.0, 1.0)
  return settings.temperature_end + (1.0 - settings.temperature_end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def kl_weight_at(step, settings) -> jax.Array:
  """β at a training step: 0 → settings.kl_weight linearly over settings.kl_warmup_steps."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(settings.kl_warmup_steps, 1), 0.0, 1.0)
  return settings.kl_weight * frac


def make_loss_fn(model, settings) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux); settings: the dvae
  section (kl_weight, kl_warmup_steps, temperature_end, temperature_steps)."""

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    del loss_history
    step = jnp.zeros((), jnp.int32) if step is None else step
    images = batch["image"]
    code_rng, dropout_rng = jax.random.split(rng)
    temperature, beta = temperature_at(step, settings), kl_weight_at(step, settings)
    stats, logits = model.apply({"params": params}, images, code_rng, temperature, deterministic=False,
                                method="relaxed", rngs={"dropout": dropout_rng})
    nll = logit_laplace_nll(images, stats)
    kl = kl_to_uniform(logits) / (images.shape[1] * images.shape[2] * images.shape[3])
    loss = jnp.mean(nll + beta * kl)
    counts = jnp.bincount(jnp.argmax(logits, -1).reshape(-1), length=logits.shape[-1])
    usage = counts / jnp.sum(counts)
    mse = jnp.mean((dvae.image_from_stats(stats) - images) ** 2, axis=(1, 2, 3))
    metrics = dict(loss=loss, nll=jnp.mean(nll), kl=jnp.mean(kl), temperature=temperature, kl_weight=beta,
                   perplexity=jnp.exp(-jnp.sum(usage * jnp.log(usage + 1e-10))),
                   codes_used=jnp.mean(counts > 0), psnr=jnp.mean(10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))))
    return loss, dict(metrics=metrics)

  return loss_fn
