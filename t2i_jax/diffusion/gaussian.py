"""The Gaussian forward process q and the model's reverse step p.

Shapes: x0, x_t, noise are [B, ...] (NHWC for images); t is int32 [B]. A model
that learns its variance outputs [..., 2C]: the mean-parameterisation channels
first, then the variance values. Arithmetic runs in the schedule's dtype
(float32, or float64 under jax_enable_x64), whatever dtype the model used.

Mean types: "eps" (the noise), "x0" (the clean image) and "v" = sqrt(ᾱ)·eps −
sqrt(1−ᾱ)·x0 (Salimans & Ho, 2022; not in improved-diffusion, which has
"previous_x" instead).
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import checks
from t2i_jax.diffusion.schedules import Schedule, extract


def _as_math(s: Schedule, x: jax.Array) -> jax.Array:
  return jnp.asarray(x, dtype=s.betas.dtype)


def q_mean_variance(s: Schedule, x0: jax.Array, t: jax.Array):
  """q(x_t | x0) = N(sqrt(ᾱ_t)·x0, (1−ᾱ_t)·I). Returns (mean, variance, log_variance), each like x0."""
  checks.check_timesteps(t, s.num_timesteps)
  x0 = _as_math(s, x0)
  ones = jnp.ones_like(x0)
  return (
      extract(s.sqrt_alphas_cumprod, t, x0) * x0,
      # Squared from the stored float64-derived root: 1 − ᾱ in float32 keeps
      # only ~3 digits at t = 0, where ᾱ ≈ 1.
      jnp.square(extract(s.sqrt_one_minus_alphas_cumprod, t, x0)) * ones,
      extract(s.log_one_minus_alphas_cumprod, t, x0) * ones,
  )


def q_sample(s: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """Draws x_t ~ q(x_t | x0) with the given standard-normal `noise` (like x0)."""
  checks.check_timesteps(t, s.num_timesteps)
  x0, noise = _as_math(s, x0), _as_math(s, noise)
  return extract(s.sqrt_alphas_cumprod, t, x0) * x0 + extract(s.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_posterior(s: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array):
  """q(x_{t-1} | x_t, x0). Returns (mean, variance, log_variance_clipped), each like x_t."""
  checks.check_timesteps(t, s.num_timesteps)
  x0, x_t = _as_math(s, x0), _as_math(s, x_t)
  mean = extract(s.posterior_mean_coef1, t, x_t) * x0 + extract(s.posterior_mean_coef2, t, x_t) * x_t
  ones = jnp.ones_like(x_t)
  return (
      mean,
      extract(s.posterior_variance, t, x_t) * ones,
      extract(s.posterior_log_variance_clipped, t, x_t) * ones,
  )


def x0_from_eps(s: Schedule, x_t, t, eps):
  """x0 = (x_t − sqrt(1−ᾱ)·eps) / sqrt(ᾱ)."""
  return extract(s.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(s.sqrt_recipm1_alphas_cumprod, t, x_t) * eps


def eps_from_x0(s: Schedule, x_t, t, x0):
  """eps = (x_t − sqrt(ᾱ)·x0) / sqrt(1−ᾱ).

  Algebraically the reference's (x_t/sqrt(ᾱ) − x0)/sqrt(1/ᾱ − 1), but finite
  where ᾱ = 0 (the last step of a zero-terminal-SNR schedule).
  """
  return (x_t - extract(s.sqrt_alphas_cumprod, t, x_t) * x0) / extract(s.sqrt_one_minus_alphas_cumprod, t, x_t)


def v_from_x0_eps(s: Schedule, x0, eps, t):
  """v = sqrt(ᾱ)·eps − sqrt(1−ᾱ)·x0, the target of a v-prediction model."""
  return extract(s.sqrt_alphas_cumprod, t, x0) * eps - extract(s.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def x0_from_v(s: Schedule, x_t, t, v):
  """x0 = sqrt(ᾱ)·x_t − sqrt(1−ᾱ)·v."""
  return extract(s.sqrt_alphas_cumprod, t, x_t) * x_t - extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * v


def eps_from_v(s: Schedule, x_t, t, v):
  """eps = sqrt(1−ᾱ)·x_t + sqrt(ᾱ)·v."""
  return extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t + extract(s.sqrt_alphas_cumprod, t, x_t) * v


def split_model_output(model_output: jax.Array, x_t: jax.Array, var_type: str):
  """Splits [..., C or 2C] into (mean part [..., C], variance values [..., C] or None)."""
  checks.check_choice("var_type", var_type, checks.VAR_TYPES)
  checks.check_model_output(model_output, x_t, var_type)
  if var_type in checks.LEARNED_VAR_TYPES:
    c = x_t.shape[-1]
    return model_output[..., :c], model_output[..., c:]
  return model_output, None


def model_log_variance(s: Schedule, var_values: Optional[jax.Array], x_t, t, var_type: str):
  """The reverse-step (variance, log_variance), each like x_t.

  - "fixed_small": the posterior variance β̃_t (log clipped at t = 0).
  - "fixed_large": β_t, with β̃_1 at t = 0 so the decoder is not too wide.
  - "learned": the model outputs log σ² directly.
  - "learned_range": the model outputs v ∈ [-1, 1] and log σ² = frac·log β_t +
    (1 − frac)·log β̃_t (clipped) with frac = (v + 1)/2 (Nichol & Dhariwal eq. 15).
  """
  ones = jnp.ones_like(x_t)
  if var_type == "fixed_small":
    log_var = extract(s.posterior_log_variance_clipped, t, x_t) * ones
    return extract(s.posterior_variance, t, x_t) * ones, log_var
  if var_type == "fixed_large":
    log_var = extract(s.fixed_large_log_variance, t, x_t) * ones
    return extract(s.fixed_large_variance, t, x_t) * ones, log_var
  var_values = _as_math(s, var_values)
  if var_type == "learned":
    log_var = var_values
  else:
    frac = (var_values + 1.0) / 2.0
    log_var = frac * extract(s.log_betas, t, x_t) + (1.0 - frac) * extract(s.posterior_log_variance_clipped, t, x_t)
  return jnp.exp(log_var), log_var


def pred_x0_from_output(s: Schedule, mean_output, x_t, t, mean_type: str):
  """The model's x0 prediction from its mean-part output (like x_t), unclipped."""
  checks.check_choice("mean_type", mean_type, checks.MEAN_TYPES)
  if mean_type == "eps":
    return x0_from_eps(s, x_t, t, mean_output)
  if mean_type == "v":
    return x0_from_v(s, x_t, t, mean_output)
  return mean_output


def p_mean_variance(
    s: Schedule,
    model_output: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    *,
    mean_type: str,
    var_type: str,
    clip_denoised: bool = True,
    denoised_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
):
  """p(x_{t-1} | x_t) from a model output.

  Args:
    s: the schedule the model is sampled on (possibly respaced).
    model_output: [B, ..., C] or [B, ..., 2C] for learned variance.
    x_t: [B, ..., C]; t: int32 [B] indices into `s`.
    denoised_fn: applied to the x0 prediction before clipping (inpainting pastes
      the known pixels here).

  Returns:
    dict(mean, variance, log_variance, pred_x0), each like x_t.
  """
  checks.check_types(mean_type, var_type)
  checks.check_timesteps(t, s.num_timesteps)
  mean_output, var_values = split_model_output(model_output, x_t, var_type)
  x_t, mean_output = _as_math(s, x_t), _as_math(s, mean_output)
  variance, log_variance = model_log_variance(s, var_values, x_t, t, var_type)
  pred_x0 = pred_x0_from_output(s, mean_output, x_t, t, mean_type)
  if denoised_fn is not None:
    pred_x0 = denoised_fn(pred_x0)
  if clip_denoised:
    pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
  mean, _, _ = q_posterior(s, pred_x0, x_t, t)
  return dict(mean=mean, variance=variance, log_variance=log_variance, pred_x0=pred_x0)
