"""Training losses and the variational bound, in bits per dimension.

Ho et al.'s L_simple, Nichol & Dhariwal's hybrid loss (L_simple + λ·L_vlb with the
VLB term training only the variance), the full VLB, and its per-timestep terms.
Per-example results are [B] means over every non-batch dimension.

The KL and the discretised decoder likelihood are written to avoid cancellation,
so float32 matches a float64 evaluation of the reference formulas:
- exp(d) − 1 − d, the log-variance part of a Gaussian KL, is a Taylor series for
  small |d| (naively it is the difference of numbers near 1);
- the KL's mean term uses the difference of means c1·(x0 − x̂0), exact because
  both posterior means share the c2·x_t term;
- log(CDF(a) − CDF(b)) of the tanh-approximate normal CDF is computed in log
  space from tanh(a) − tanh(b) = sinh(a − b)/(cosh a · cosh b), with a − b
  factored and the large terms summed in closed form, so that it never
  subtracts two nearby numbers.
The reference's 1e-12 floor on each probability is kept, so the values agree.
"""

from typing import Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.diffusion import checks
from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion.schedules import Schedule, extract

LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")
_LOG2 = float(np.log(2.0))
_LOG_FLOOR = float(np.log(1e-12))  # improved-diffusion clamps probabilities at 1e-12


def mean_flat(x: jax.Array) -> jax.Array:
  """Mean over every axis but the first: [B, ...] -> [B]."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def _exp_minus_one_minus(d: jax.Array) -> jax.Array:
  """exp(d) − 1 − d without cancellation (it is ≈ d²/2 for small d)."""
  small = jnp.abs(d) < 0.1
  ds = jnp.where(small, d, 0.0)
  # Truncation error d^7/5040 is < 1e-8 relative to d²/2 for |d| < 0.1.
  series = 0.5 * ds * ds * (1.0 + ds / 3.0 * (1.0 + ds / 4.0 * (1.0 + ds / 5.0 * (1.0 + ds / 6.0))))
  dl = jnp.where(small, 1.0, d)
  return jnp.where(small, series, jnp.expm1(dl) - dl)


def normal_kl_from_diff(mean_diff, logvar1, logvar2):
  """KL(N(m1, e^lv1) || N(m2, e^lv2)) elementwise, given mean_diff = m1 − m2."""
  return 0.5 * (_exp_minus_one_minus(logvar1 - logvar2) + jnp.square(mean_diff) * jnp.exp(-logvar2))


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats, elementwise (broadcasts)."""
  return normal_kl_from_diff(jnp.asarray(mean1) - mean2, logvar1, logvar2)


def approx_standard_normal_cdf(x):
  """The tanh approximation of the standard normal CDF used by Ho et al. and improved-diffusion."""
  return 0.5 * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
  """Log-probability (nats) of 8-bit pixels under a Gaussian discretised to 1/255 bins.

  Args:
    x: targets in [-1, 1], uint8 values rescaled as 2·v/255 − 1; [B, ...].
    means, log_scales: the Gaussian's mean and log standard deviation, like x.

  Returns:
    [B, ...] log-probabilities; the edge bins (x < −0.999, x > 0.999) take the
    whole tail.
  """
  if not (x.shape == means.shape == log_scales.shape):
    raise ValueError(f"x, means, log_scales must share a shape, got {x.shape}, {means.shape}, {log_scales.shape}.")
  k = np.sqrt(2.0 / np.pi)
  # Below σ = 1e-6 a ±1/255 bin spans > 3900σ and every CDF value has saturated, so
  # flooring σ there changes no probability but keeps upper³ finite in float32.
  inv_stdv = jnp.exp(-jnp.maximum(log_scales, np.log(1e-6)))
  centered = x - means
  upper = inv_stdv * (centered + 1.0 / 255.0)
  lower = inv_stdv * (centered - 1.0 / 255.0)
  a = k * (upper + 0.044715 * upper**3)
  b = k * (lower + 0.044715 * lower**3)
  # a − b = k·(u − l)·(1 + 0.044715·(u² + u·l + l²)) with u − l = 2·inv_stdv/255 > 0.
  d = k * (2.0 / 255.0) * inv_stdv * (1.0 + 0.044715 * (upper**2 + upper * lower + lower**2))
  log_cdf_plus = -jax.nn.softplus(-2.0 * a)
  log_one_minus_cdf_min = -jax.nn.softplus(2.0 * b)
  # log(½(tanh a − tanh b)) = log sinh(d) − log cosh a − log cosh b − log 2, and with
  # log cosh z = |z| + softplus(−2|z|) − log 2 the large parts d − |a| − |b| sum exactly
  # to −2·max(b, −a, 0): 0 when the bin straddles the mean, else twice the nearer edge.
  log_cdf_delta = (
      -2.0 * jnp.maximum(jnp.maximum(b, -a), 0.0)
      + jnp.log(-jnp.expm1(-2.0 * d))
      - jax.nn.softplus(-2.0 * jnp.abs(a))
      - jax.nn.softplus(-2.0 * jnp.abs(b))
  )
  log_probs = jnp.where(
      x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta)
  )
  return jnp.maximum(log_probs, _LOG_FLOOR)


def _vb_terms(s, model_output, x0, x_t, t, *, mean_type, var_type, clip_denoised):
  """VLB term at t in bits/dim ([B]) and p_mean_variance's output."""
  x0 = jnp.asarray(x0, s.betas.dtype)
  out = gaussian.p_mean_variance(
      s, model_output, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised
  )
  true_log_var = extract(s.posterior_log_variance_clipped, t, x0)
  mean_diff = extract(s.posterior_mean_coef1, t, x0) * (x0 - out["pred_x0"])
  kl = mean_flat(normal_kl_from_diff(mean_diff, true_log_var, out["log_variance"])) / _LOG2
  decoder_nll = -mean_flat(
      discretized_gaussian_log_likelihood(x0, means=out["mean"], log_scales=0.5 * out["log_variance"])
  ) / _LOG2
  return jnp.where(t == 0, decoder_nll, kl), out


def vb_terms_bpd(s, model_output, x0, x_t, t, *, mean_type, var_type, clip_denoised=False):
  """One term of the variational bound in bits/dim, [B].

  KL(q(x_{t-1}|x_t, x0) || p(x_{t-1}|x_t)) for t > 0 and the discretised decoder
  NLL −log p(x0|x_1) at t = 0. Shapes as in gaussian.p_mean_variance.
  clip_denoised defaults to False, as in training; the likelihood evaluation of
  improved-diffusion clips, so `calc_bpd` does.
  """
  return _vb_terms(
      s, model_output, x0, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised
  )[0]


def prior_bpd(s: Schedule, x0: jax.Array) -> jax.Array:
  """KL(q(x_T | x0) || N(0, I)) in bits/dim, [B]: the bound's term no model can change."""
  t = jnp.full((x0.shape[0],), s.num_timesteps - 1, dtype=jnp.int32)
  mean, _, log_var = gaussian.q_mean_variance(s, x0, t)
  return mean_flat(normal_kl_from_diff(mean, log_var, 0.0)) / _LOG2


def snr(s: Schedule, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t), [B]."""
  checks.check_timesteps(t, s.num_timesteps)
  # From the stored roots rather than 1 − ᾱ, which cancels in float32 when ᾱ ≈ 1.
  return jnp.square(s.sqrt_alphas_cumprod[t] / s.sqrt_one_minus_alphas_cumprod[t])


def min_snr_weight(s: Schedule, t: jax.Array, gamma: float, mean_type: str) -> jax.Array:
  """Min-SNR-γ loss weights (Hang et al., 2023), [B].

  The x0-space weight min(SNR, γ), expressed for the loss on the model's own
  target: /SNR for eps, /(SNR + 1) for v.
  """
  checks.check_choice("mean_type", mean_type, checks.MEAN_TYPES)
  if not gamma > 0:
    raise ValueError(f"min_snr_gamma={gamma!r} must be positive (5 in the paper); use None to switch "
                     "the weighting off, since γ = 0 would weight every term by zero.")
  snr_t = snr(s, t)
  clipped = jnp.minimum(snr_t, gamma)
  if mean_type == "eps":
    return jnp.minimum(1.0, gamma / snr_t)  # = clipped / SNR, and 1 where SNR = 0
  if mean_type == "v":
    return clipped / (snr_t + 1.0)
  return clipped


def training_losses(
    s: Schedule,
    model_output: jax.Array,
    x0: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    *,
    mean_type: str,
    var_type: str,
    loss_type: str,
    min_snr_gamma: Optional[float] = None,
):
  """Per-example training losses at x_t = q_sample(s, x0, t, noise).

  Args:
    model_output: [B, ..., C], or [B, ..., 2C] when var_type is learned.
    x0, x_t, noise: [B, ..., C]; t: int32 [B].
    loss_type: "mse" (L_simple, plus the VLB term unscaled if the variance is
      learned), "rescaled_mse" (the hybrid loss: VLB term × T/1000, i.e.
      λ = 0.001 for T = 1000), "kl" (the VLB term), "rescaled_kl" (× T).
      In the mse losses the VLB term sees the mean output through stop_gradient,
      so it trains only the variance.
    min_snr_gamma: if set, weights the mse term by min-SNR-γ.

  Returns:
    dict(loss, mse, vb), each float [B] (vb is zero for a fixed variance).
  """
  checks.check_choice("loss_type", loss_type, LOSS_TYPES)
  checks.check_types(mean_type, var_type)
  # The mse path with a fixed variance never reaches p_mean_variance's check, and
  # an out-of-range gather would silently clamp to the last step.
  checks.check_timesteps(t, s.num_timesteps)
  mean_output, var_values = gaussian.split_model_output(model_output, x_t, var_type)
  mean_output = jnp.asarray(mean_output, s.betas.dtype)
  x0, noise = jnp.asarray(x0, s.betas.dtype), jnp.asarray(noise, s.betas.dtype)
  target = {"eps": noise, "x0": x0}.get(mean_type)
  if target is None:
    target = gaussian.v_from_x0_eps(s, x0, noise, t)
  mse = mean_flat(jnp.square(target - mean_output))
  if min_snr_gamma is not None:
    mse = mse * min_snr_weight(s, t, min_snr_gamma, mean_type)

  vb_kwargs = dict(mean_type=mean_type, var_type=var_type, clip_denoised=False)
  if loss_type in ("kl", "rescaled_kl"):
    vb = vb_terms_bpd(s, model_output, x0, x_t, t, **vb_kwargs)
    if loss_type == "rescaled_kl":
      vb = vb * s.num_timesteps
    return dict(loss=vb, mse=mse, vb=vb)
  if var_values is None:
    return dict(loss=mse, mse=mse, vb=jnp.zeros_like(mse))
  frozen = jnp.concatenate([jax.lax.stop_gradient(mean_output), jnp.asarray(var_values, s.betas.dtype)], axis=-1)
  vb = vb_terms_bpd(s, frozen, x0, x_t, t, **vb_kwargs)
  if loss_type == "rescaled_mse":
    vb = vb * (s.num_timesteps / 1000.0)
  return dict(loss=mse + vb, mse=mse, vb=vb)


def calc_bpd(
    model_fn: Callable,
    s: Schedule,
    x0: jax.Array,
    key: jax.Array,
    *,
    mean_type: str,
    var_type: str,
    cond=None,
    timestep_map: Optional[jax.Array] = None,
    clip_denoised: bool = True,
):
  """The whole variational bound of a batch, every timestep in one lax.scan.

  Args:
    model_fn: (x_t, t, cond) -> model_output; it is given original timesteps
      (timestep_map[t]) when `s` is respaced.
    x0: [B, ...] images in [-1, 1]; key: PRNG key for the forward noise.

  Returns:
    dict(total_bpd [B], prior_bpd [B], vb [B, T], x0_mse [B, T], mse [B, T]),
    with columns in timestep order 0..T-1 (improved-diffusion's calc_bpd_loop
    stacks them in loop order, column 0 being t = T−1).
  """
  checks.check_types(mean_type, var_type)
  x0 = jnp.asarray(x0, s.betas.dtype)
  batch = x0.shape[0]
  if timestep_map is None:
    timestep_map = jnp.arange(s.num_timesteps, dtype=jnp.int32)

  def step(carry, i):
    t = jnp.full((batch,), i, dtype=jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(key, i), x0.shape, x0.dtype)
    x_t = gaussian.q_sample(s, x0, t, noise)
    model_output = model_fn(x_t, timestep_map[t], cond)
    vb, out = _vb_terms(
        s, model_output, x0, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised
    )
    eps = gaussian.eps_from_x0(s, x_t, t, out["pred_x0"])
    return carry, (vb, mean_flat(jnp.square(out["pred_x0"] - x0)), mean_flat(jnp.square(eps - noise)))

  # Reverse order, as the reference does; the fold_in keys make the order irrelevant.
  _, (vb, x0_mse, mse) = jax.lax.scan(step, None, jnp.arange(s.num_timesteps - 1, -1, -1))
  vb, x0_mse, mse = (jnp.flip(a, axis=0).T for a in (vb, x0_mse, mse))
  prior = prior_bpd(s, x0)
  return dict(total_bpd=jnp.sum(vb, axis=1) + prior, prior_bpd=prior, vb=vb, x0_mse=x0_mse, mse=mse)


def dataset_bpd(model_fn, s: Schedule, batches: Iterable, key: jax.Array, **kwargs) -> dict:
  """Mean bits/dim over an iterable of image batches ([B, ...] each, or dicts with "image").

  Each batch runs `calc_bpd` jitted once; `cond` is taken from a dict batch's
  "cond" entry when present. Returns dict(bpd, prior_bpd, vb_per_t [T], num_examples).
  """
  jitted = jax.jit(lambda x, c, k: calc_bpd(model_fn, s, x, k, cond=c, **kwargs))
  totals, priors, vb_sum, count = 0.0, 0.0, 0.0, 0
  for index, batch in enumerate(batches):
    images, cond = (batch["image"], batch.get("cond")) if isinstance(batch, dict) else (batch, None)
    out = jitted(images, cond, jax.random.fold_in(key, index))
    totals += float(jnp.sum(out["total_bpd"]))
    priors += float(jnp.sum(out["prior_bpd"]))
    vb_sum = vb_sum + np.asarray(jnp.sum(out["vb"], axis=0))
    count += images.shape[0]
  if count == 0:
    raise ValueError("dataset_bpd got no batches: pass a non-empty iterable of images.")
  return dict(bpd=totals / count, prior_bpd=priors / count, vb_per_t=vb_sum / count, num_examples=count)
