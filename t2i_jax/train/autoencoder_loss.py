"""The training loss of latent diffusion's first stage: reconstruction plus the KL or VQ regulariser.

A batch is dict(image [B, H, W, C] in [-1, 1]). latent-diffusion sums its losses over pixels and averages
over the batch; here every term is divided by the pixels per image (H·W·C), which keeps its weights
(kl_weight = 1e-6 for its KL models) and makes the reconstruction term a per-pixel mean:

  KL:  mean |x − x̂| (or squared) + kl_weight · KL(q(z|x) ‖ N(0, I)) / (H·W·C)
  VQ:  mean |x − x̂| (or squared) + β·‖z − sg(q)‖² + ‖sg(z) − q‖²   (the quantiser's own means)

The KL model decodes a posterior sample in training, as LDM does. The adversarial term of LDM's loss is
not here yet (issue 25).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from t2i_jax.models import autoencoder

RECONSTRUCTION = ("l1", "l2")


def make_loss_fn(model, config) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux) for an AutoencoderKL or
  VQModel; config: the autoencoder section (reconstruction, kl_weight).

  aux["metrics"]: loss, reconstruction (the per-pixel term), psnr (dB, of the reconstructions, range 2), and
  kl (per image, summed) or commitment, codebook and perplexity.
  """
  if config.reconstruction not in RECONSTRUCTION:
    raise ValueError(f"autoencoder.reconstruction={config.reconstruction!r}; use one of {RECONSTRUCTION}.")
  if isinstance(model, autoencoder.VQModel) and model.ema:
    raise ValueError("model.ema=True keeps the codebook in a non-param collection, which this trainer does not "
                     "update yet; set model.ema=False (the codebook is then trained by its loss).")
  is_kl = isinstance(model, autoencoder.AutoencoderKL)

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    del loss_history, step
    x = batch["image"].astype(jnp.float32)
    sample_rng, dropout_rng = jax.random.split(rng)
    rngs = {"dropout": dropout_rng}
    if is_kl:
      recon, aux = model.apply({"params": params}, x, sample_rng, deterministic=False, rngs=rngs)
    else:
      recon, aux = model.apply({"params": params}, x, deterministic=False, rngs=rngs)
    error = recon - x
    per_pixel = jnp.abs(error) if config.reconstruction == "l1" else jnp.square(error)
    reconstruction = jnp.mean(per_pixel)
    mse = jnp.mean(jnp.square(error), axis=(1, 2, 3))
    metrics = dict(reconstruction=reconstruction, psnr=jnp.mean(10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))))
    if is_kl:
      kl = jnp.mean(aux["kl"])
      loss = reconstruction + config.kl_weight * kl / x[0].size
      metrics["kl"] = kl
    else:
      loss = reconstruction + aux["commitment_loss"] + aux["codebook_loss"]
      metrics.update(commitment=aux["commitment_loss"], codebook=aux["codebook_loss"],
                     perplexity=aux["perplexity"])
    metrics["loss"] = loss
    return loss, dict(metrics=metrics)

  return loss_fn
