"""The training loss of latent diffusion's first stage: reconstruction, the KL or VQ regulariser, and optionally
VQGAN's adversarial terms against a patch discriminator.

A batch is dict(image [B, H, W, C] in [-1, 1]). latent-diffusion sums its losses over pixels and averages
over the batch; here every term is divided by the pixels per image (H·W·C), which keeps its weights
(kl_weight = 1e-6 for its KL models) and makes the reconstruction term a per-pixel mean:

  KL:  mean |x − x̂| (or squared) + kl_weight · KL(q(z|x) ‖ N(0, I)) / (H·W·C)
  VQ:  mean |x − x̂| (or squared) + β·‖z − sg(q)‖² + ‖sg(z) − q‖²   (the quantiser's own means)

The KL model decodes a posterior sample in training, as LDM does. A VQModel(ema=True) updates its codebook
in the forward pass instead: the loss reads the codebook's collection as model_state and returns the updated
one as aux["model_state"] (train/step.py writes it into the state).

The adversarial terms (autoencoder.disc_weight > 0, a model with disc_layers > 0; Esser et al., 2021) are
added from step disc_start on; before it they are exactly zero, in value and gradient, and not computed:

  total = L_ae(θ_ae, sg(θ_D)) + L_D(sg(x̂), θ_D)
  L_ae  = the terms above + λ · g_loss,  g_loss = −mean D(x̂)
  L_D   = hinge: ½ (mean relu(1 − D(x)) + mean relu(1 + D(sg(x̂))))
  λ     = disc_weight · sg(clip(‖∇_W rec‖ / (‖∇_W g_loss‖ + 1e-4), 0, 1e4)), W: the decoder's last conv kernel

so one optimizer over one params tree trains both: the autoencoder's gradient is L_ae's alone and the
discriminator's is L_D's alone. λ (VQGAN's adaptive weight) is taken against the reconstruction term only,
there being no perceptual (LPIPS) term here. It balances the two gradients at W whatever their scale, so the
per-pixel normalisation above changes λ's value but not the balance; VQGAN's disc_weight values carry over.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from t2i_jax.models import autoencoder

RECONSTRUCTION = ("l1", "l2")
ADAPTIVE_EPS = 1e-4  # VQGAN's, in the adaptive weight's denominator
ADAPTIVE_MAX = 1e4  # VQGAN's clip on the adaptive weight
GAN_METRICS = ("g_loss", "d_loss", "disc_weight", "logits_real", "logits_fake")


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  """The discriminator's hinge loss ½ (mean relu(1 − logits_real) + mean relu(1 + logits_fake)): logits of any
  shape (patch logits [B, H', W', 1]) -> float32 []."""
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def adaptive_weight(rec_grad: jax.Array, gan_grad: jax.Array) -> jax.Array:
  """VQGAN's λ = ‖rec_grad‖ / (‖gan_grad‖ + 1e-4), clipped to [0, 1e4] and stop-gradiented: the gradients of the
  reconstruction and generator losses with respect to the decoder's last conv kernel (same shapes) -> []."""
  ratio = jnp.linalg.norm(rec_grad.ravel()) / (jnp.linalg.norm(gan_grad.ravel()) + ADAPTIVE_EPS)
  return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, ADAPTIVE_MAX))


def _check_config(model, config) -> None:
  if config.reconstruction not in RECONSTRUCTION:
    raise ValueError(f"autoencoder.reconstruction={config.reconstruction!r}; use one of {RECONSTRUCTION}.")
  if config.disc_weight < 0 or config.disc_start < 0:
    raise ValueError(f"autoencoder.disc_weight={config.disc_weight} and disc_start={config.disc_start} must be "
                     ">= 0.")
  if config.disc_weight > 0 and not model.disc_layers:
    raise ValueError(f"autoencoder.disc_weight={config.disc_weight} needs a discriminator: set model.disc_layers > 0 "
                     "(e.g. 3), or disc_weight=0.")
  if model.disc_layers and not config.disc_weight > 0:
    raise ValueError(f"model.disc_layers={model.disc_layers} builds a discriminator that autoencoder.disc_weight=0 "
                     "never trains: set disc_weight > 0 (VQGAN: 0.8), or model.disc_layers=0.")


def make_loss_fn(model, config) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None, model_state=None) -> (loss, aux) for an
  AutoencoderKL or VQModel; config: the autoencoder section (reconstruction, kl_weight, disc_weight, disc_start).

  step (int32 []) is needed when disc_weight > 0; model_state ({"vq_stats": ...}, the state's) when the model
  is a VQModel(ema=True), which also returns the updated collection as aux["model_state"].
  aux["metrics"]: loss (the total), reconstruction (the per-pixel term), psnr (dB, of the reconstructions,
  range 2), and kl (per image, summed) or commitment, codebook and perplexity; with the discriminator also
  g_loss, d_loss, disc_weight (λ, as applied to g_loss), logits_real and logits_fake (mean logits of the
  discriminator's pass), all 0 before disc_start.
  """
  _check_config(model, config)
  is_kl = isinstance(model, autoencoder.AutoencoderKL)
  ema = isinstance(model, autoencoder.VQModel) and model.ema
  gan = config.disc_weight > 0

  def reconstruction_term(recon, x):
    error = recon - x
    return jnp.mean(jnp.abs(error) if config.reconstruction == "l1" else jnp.square(error))

  def discriminate(disc_params, images):
    return model.apply({"params": {"discriminator": disc_params}}, images, method=model.discriminate)

  def adversarial(params, x, recon, features):
    """(λ·g_loss + d_loss, metrics), the disc_start-gated part of the total."""
    frozen_disc = jax.lax.stop_gradient(params["discriminator"])
    g_loss = -jnp.mean(discriminate(frozen_disc, recon))
    logits_real, logits_fake = jnp.split(
        discriminate(params["discriminator"], jnp.concatenate([x, jax.lax.stop_gradient(recon)])), 2)
    d_loss = hinge_d_loss(logits_real, logits_fake)
    # The output as a function of the last conv's kernel alone: its input (features) does not depend on it.
    conv_out, features = jax.lax.stop_gradient((params["decoder"]["conv_out"], features))
    head = lambda kernel: autoencoder.decoder_head(  # noqa: E731
        dict(conv_out, kernel=kernel), features, model.out_channels, model.dtype)
    rec_grad = jax.grad(lambda w: reconstruction_term(head(w), x))(conv_out["kernel"])
    gan_grad = jax.grad(lambda w: -jnp.mean(discriminate(frozen_disc, head(w))))(conv_out["kernel"])
    weight = config.disc_weight * adaptive_weight(rec_grad, gan_grad)
    metrics = dict(g_loss=g_loss, d_loss=d_loss, disc_weight=weight, logits_real=jnp.mean(logits_real),
                   logits_fake=jnp.mean(logits_fake))
    return weight * g_loss + d_loss, metrics

  def inactive(params, x, recon, features):
    del params, x, recon, features
    zero = jnp.zeros((), jnp.float32)
    return zero, {k: zero for k in GAN_METRICS}

  def loss_fn(params, batch, rng, loss_history=None, step=None, model_state=None):
    del loss_history
    x = batch["image"].astype(jnp.float32)
    sample_rng, dropout_rng = jax.random.split(rng)
    rngs = {"dropout": dropout_rng}
    variables, mutable, kwargs = {"params": params}, [], {}
    if ema:
      if model_state is None:
        raise ValueError("a VQModel with ema=True keeps its codebook in model_state: pass the train state's "
                         "model_state= to the loss (train/step.py does).")
      variables.update(model_state)
      mutable.append("vq_stats")
      kwargs["update_codebook"] = True
    if gan:
      if step is None:
        raise ValueError("the adversarial terms start at autoencoder.disc_start: call the loss with the optimizer "
                         "step (train/step.py does).")
      mutable.append("intermediates")
    args = (x, sample_rng) if is_kl else (x,)
    if mutable:
      (recon, aux), updated = model.apply(variables, *args, deterministic=False, rngs=rngs, mutable=mutable,
                                          **kwargs)
    else:
      recon, aux = model.apply(variables, *args, deterministic=False, rngs=rngs)
    error = recon - x
    reconstruction = reconstruction_term(recon, x)
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
    if gan:
      features = updated["intermediates"]["decoder"]["features"][0]
      adv, adv_metrics = jax.lax.cond(step >= config.disc_start, adversarial, inactive, params, x, recon, features)
      loss = loss + adv
      metrics.update(adv_metrics)
    metrics["loss"] = loss
    out = dict(metrics=metrics)
    if ema:
      out["model_state"] = {"vq_stats": updated["vq_stats"]}
    return loss, out

  return loss_fn
