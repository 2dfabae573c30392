"""A naive float64 numpy statement of the DDPM / Improved-DDPM formulas.

This is the yardstick the tests hold t2i_jax.diffusion against. It is written
straight from the papers (Ho et al., 2020; Nichol & Dhariwal, 2021) with the
conventions of openai/improved-diffusion, and deliberately does nothing clever:
every quantity is the textbook expression evaluated in float64, including the
ones (a Gaussian KL with nearly equal variances, a difference of two CDFs) that
cancel badly. Where float64 is enough, that makes it an independent check of
the careful float32 formulas in the library; the tests choose inputs where it is.

Its agreement with the real improved-diffusion code (PyTorch, float64) was
checked by a throwaway script outside the repository; see the test docstrings.

Layout: arrays are NHWC, `t` is an int vector of indices 0..T-1 (0 = the first
noising step), a learned-variance model output is [..., 2C] with the mean part
first.
"""

import math

import numpy as np

LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------
# Beta schedules.


def linear_betas(num_timesteps):
  """Ho et al.: 1e-4 → 0.02 over 1000 steps, both ends stretched by 1000/T."""
  lo, hi = 1e-4 * 1000.0 / num_timesteps, 0.02 * 1000.0 / num_timesteps
  if num_timesteps == 1:
    return np.array([lo])
  return np.array([lo + (hi - lo) * i / (num_timesteps - 1) for i in range(num_timesteps)])


def cosine_alpha_bar(tau):
  """ᾱ(τ) = cos²((τ + s)/(1 + s) · π/2) with s = 0.008."""
  return math.cos((tau + 0.008) / 1.008 * math.pi / 2.0) ** 2


def cosine_betas(num_timesteps, max_beta=0.999):
  """β_i = 1 − ᾱ((i+1)/T)/ᾱ(i/T), capped at max_beta."""
  out = []
  for i in range(num_timesteps):
    ratio = cosine_alpha_bar((i + 1) / num_timesteps) / cosine_alpha_bar(i / num_timesteps)
    out.append(min(1.0 - ratio, max_beta))
  return np.array(out)


def beta_schedule(name, num_timesteps):
  if name == "linear":
    return linear_betas(num_timesteps)
  if name == "cosine":
    return cosine_betas(num_timesteps)
  raise ValueError(name)


# ----------------------------------------------------------------------------
# Per-timestep constants.


class Process:
  """All per-step constants of q for a given beta sequence (float64 [T] each)."""

  def __init__(self, betas):
    betas = np.array(betas, dtype=np.float64)
    T = len(betas)
    self.T = T
    self.betas = betas
    abar = np.empty(T)
    running = 1.0
    for i in range(T):  # a running product, in the order the process runs
      running = running * (1.0 - betas[i])
      abar[i] = running
    self.abar = abar
    self.abar_prev = np.array([1.0] + list(abar[:-1]))
    self.abar_next = np.array(list(abar[1:]) + [0.0])
    # Posterior q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7).
    self.post_var = betas * (1.0 - self.abar_prev) / (1.0 - abar)
    # The posterior variance is 0 at t = 0; its log is replaced by the value at t = 1.
    self.post_logvar_clipped = np.log(np.array([self.post_var[1]] + list(self.post_var[1:])))
    self.post_c1 = np.sqrt(self.abar_prev) * betas / (1.0 - abar)
    self.post_c2 = np.sqrt(1.0 - betas) * (1.0 - self.abar_prev) / (1.0 - abar)
    # fixed_large uses β_t, except at t = 0 where it uses β̃_1.
    self.large_var = np.array([self.post_var[1]] + list(betas[1:]))


def _at(values, t, x):
  """values[t] reshaped to broadcast over x [B, ...]."""
  t = np.asarray(t)
  return np.asarray(values, dtype=np.float64)[t].reshape((-1,) + (1,) * (np.ndim(x) - 1))


def _f64(x):
  return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------
# q and p.


def q_mean_variance(p, x0, t):
  x0 = _f64(x0)
  ab = _at(p.abar, t, x0)
  mean = np.sqrt(ab) * x0
  var = (1.0 - ab) * np.ones_like(x0)
  return mean, var, np.log(var)


def q_sample(p, x0, t, noise):
  ab = _at(p.abar, t, x0)
  return np.sqrt(ab) * _f64(x0) + np.sqrt(1.0 - ab) * _f64(noise)


def q_posterior(p, x0, x_t, t):
  x0, x_t = _f64(x0), _f64(x_t)
  mean = _at(p.post_c1, t, x_t) * x0 + _at(p.post_c2, t, x_t) * x_t
  ones = np.ones_like(x_t)
  return mean, _at(p.post_var, t, x_t) * ones, _at(p.post_logvar_clipped, t, x_t) * ones


def x0_from_eps(p, x_t, t, eps):
  ab = _at(p.abar, t, x_t)
  return (_f64(x_t) - np.sqrt(1.0 - ab) * _f64(eps)) / np.sqrt(ab)


def v_target(p, x0, eps, t):
  """v = sqrt(ᾱ)·eps − sqrt(1−ᾱ)·x0 (Salimans & Ho, 2022)."""
  ab = _at(p.abar, t, x0)
  return np.sqrt(ab) * _f64(eps) - np.sqrt(1.0 - ab) * _f64(x0)


def x0_from_v(p, x_t, t, v):
  """Solves x_t = a·x0 + b·eps, v = a·eps − b·x0 for x0, one 2×2 system per example.

  Solving the definition numerically (rather than using the closed form
  a·x_t − b·v) keeps this independent of the algebra in the library.
  """
  x_t, v = _f64(x_t), _f64(v)
  out = np.empty_like(x_t)
  for i, ti in enumerate(np.asarray(t)):
    a, b = math.sqrt(p.abar[ti]), math.sqrt(1.0 - p.abar[ti])
    system = np.array([[a, b], [-b, a]])  # rows: x_t, v; columns: x0, eps
    rhs = np.stack([x_t[i].ravel(), v[i].ravel()])
    out[i] = np.linalg.solve(system, rhs)[0].reshape(x_t[i].shape)
  return out


def model_variance(p, var_values, x_t, t, var_type):
  """(variance, log_variance) of p(x_{t-1} | x_t)."""
  ones = np.ones_like(_f64(x_t))
  if var_type == "fixed_small":
    return _at(p.post_var, t, x_t) * ones, _at(p.post_logvar_clipped, t, x_t) * ones
  if var_type == "fixed_large":
    return _at(p.large_var, t, x_t) * ones, np.log(_at(p.large_var, t, x_t)) * ones
  var_values = _f64(var_values)
  if var_type == "learned":
    return np.exp(var_values), var_values
  if var_type == "learned_range":
    # Interpolates in log space between β̃_t (v = −1) and β_t (v = +1).
    frac = (var_values + 1.0) / 2.0
    lo = _at(p.post_logvar_clipped, t, x_t)
    hi = np.log(_at(p.betas, t, x_t))
    log_var = frac * hi + (1.0 - frac) * lo
    return np.exp(log_var), log_var
  raise ValueError(var_type)


def p_mean_variance(p, model_output, x_t, t, mean_type, var_type, clip_denoised=True):
  model_output, x_t = _f64(model_output), _f64(x_t)
  c = x_t.shape[-1]
  if var_type in ("learned", "learned_range"):
    assert model_output.shape[-1] == 2 * c
    mean_out, var_values = model_output[..., :c], model_output[..., c:]
  else:
    assert model_output.shape[-1] == c
    mean_out, var_values = model_output, None
  variance, log_variance = model_variance(p, var_values, x_t, t, var_type)
  if mean_type == "eps":
    pred_x0 = x0_from_eps(p, x_t, t, mean_out)
  elif mean_type == "x0":
    pred_x0 = mean_out
  elif mean_type == "v":
    pred_x0 = x0_from_v(p, x_t, t, mean_out)
  else:
    raise ValueError(mean_type)
  if clip_denoised:
    pred_x0 = np.clip(pred_x0, -1.0, 1.0)
  mean = q_posterior(p, pred_x0, x_t, t)[0]
  return dict(mean=mean, variance=variance, log_variance=log_variance, pred_x0=pred_x0)


# ----------------------------------------------------------------------------
# Likelihood pieces.


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N1 || N2) = ½(log σ2²/σ1² + σ1²/σ2² + (μ1−μ2)²/σ2² − 1), naively."""
  mean1, logvar1, mean2, logvar2 = map(_f64, (mean1, logvar1, mean2, logvar2))
  return 0.5 * (logvar2 - logvar1 + np.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * np.exp(-logvar2) - 1.0)


def approx_standard_normal_cdf(x):
  x = _f64(x)
  return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
  """log P(bin of x) for a Gaussian over 8-bit pixels in [-1, 1]; edge bins take the tails.

  Each probability is floored at 1e-12 before the log, as the reference does.
  """
  x, means, log_scales = _f64(x), _f64(means), _f64(log_scales)
  inv_sigma = np.exp(-log_scales)
  cdf_hi = approx_standard_normal_cdf(inv_sigma * (x - means + 1.0 / 255.0))
  cdf_lo = approx_standard_normal_cdf(inv_sigma * (x - means - 1.0 / 255.0))
  prob = np.where(x < -0.999, cdf_hi, np.where(x > 0.999, 1.0 - cdf_lo, cdf_hi - cdf_lo))
  return np.log(np.maximum(prob, 1e-12))


def mean_flat(x):
  x = _f64(x)
  return x.reshape(x.shape[0], -1).mean(axis=1)


def vb_terms_bpd(p, model_output, x0, x_t, t, mean_type, var_type, clip_denoised=False):
  """L_{t-1} in bits/dim: the decoder NLL at t = 0, KL(q posterior || p) otherwise."""
  out = p_mean_variance(p, model_output, x_t, t, mean_type, var_type, clip_denoised)
  true_mean, _, true_logvar = q_posterior(p, x0, x_t, t)
  kl = mean_flat(normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"])) / LOG2
  nll = -mean_flat(discretized_gaussian_log_likelihood(
      x0, out["mean"], 0.5 * out["log_variance"])) / LOG2
  return np.where(np.asarray(t) == 0, nll, kl)


def prior_bpd(p, x0):
  t = np.full(np.shape(x0)[0], p.T - 1)
  mean, _, logvar = q_mean_variance(p, x0, t)
  return mean_flat(normal_kl(mean, logvar, 0.0, 0.0)) / LOG2


def training_losses(p, model_output, x0, t, noise, mean_type, var_type, loss_type):
  """dict(loss, mse, vb) per example; x_t is q_sample(x0, t, noise)."""
  x0, noise, model_output = _f64(x0), _f64(noise), _f64(model_output)
  x_t = q_sample(p, x0, t, noise)
  learned = var_type in ("learned", "learned_range")
  mean_out = model_output[..., : x0.shape[-1]]
  target = {"eps": noise, "x0": x0, "v": None}[mean_type]
  if mean_type == "v":
    target = v_target(p, x0, noise, t)
  mse = mean_flat((target - mean_out) ** 2)
  if loss_type in ("kl", "rescaled_kl"):
    vb = vb_terms_bpd(p, model_output, x0, x_t, t, mean_type, var_type, clip_denoised=False)
    if loss_type == "rescaled_kl":
      vb = vb * p.T
    return dict(loss=vb, mse=mse, vb=vb)
  if loss_type not in ("mse", "rescaled_mse"):
    raise ValueError(loss_type)
  vb = np.zeros_like(mse)
  if learned:
    vb = vb_terms_bpd(p, model_output, x0, x_t, t, mean_type, var_type, clip_denoised=False)
    if loss_type == "rescaled_mse":
      vb = vb * (p.T / 1000.0)
  return dict(loss=mse + vb, mse=mse, vb=vb)


# ----------------------------------------------------------------------------
# Respacing.


def space_timesteps(num_timesteps, section_counts):
  """Sorted kept steps: "ddimN" (integer stride) or per-section counts.

  Section i of T // n (+1 for the first T % n) steps keeps count_i steps at
  positions 0, s, 2s, … with s = (size−1)/(count−1) accumulated by repeated
  addition and rounded half-to-even, as Python's round() does in the reference.
  """
  if isinstance(section_counts, str) and section_counts.startswith("ddim"):
    n = int(section_counts[4:])
    stride = 1
    while stride < num_timesteps:
      steps = list(range(0, num_timesteps, stride))
      if len(steps) == n:
        return steps
      stride += 1
    raise ValueError(section_counts)
  if isinstance(section_counts, str):
    section_counts = [int(part) for part in section_counts.split(",")]
  n = len(section_counts)
  sizes = [num_timesteps // n + (1 if i < num_timesteps % n else 0) for i in range(n)]
  kept, offset = set(), 0
  for size, count in zip(sizes, section_counts):
    if count > size:
      raise ValueError((size, count))
    stride = (size - 1) / (count - 1) if count > 1 else 1
    pos = 0.0
    for _ in range(count):
      kept.add(offset + round(pos))
      pos += stride
    offset += size
  return sorted(kept)


def respace(betas, use_timesteps):
  """(new betas, timestep_map) keeping ᾱ at each kept step."""
  abar = Process(betas).abar
  keep = sorted(set(int(k) for k in use_timesteps))
  new_betas, prev = [], 1.0
  for k in keep:
    new_betas.append(1.0 - abar[k] / prev)
    prev = abar[k]
  return np.array(new_betas), np.array(keep)


# ----------------------------------------------------------------------------
# Test helpers: comparison and inputs.


def scaled_error(got, want):
  """max |got − want| / max |want|: the error relative to the array's scale."""
  got, want = _f64(got), _f64(want)
  assert got.shape == want.shape, (got.shape, want.shape)
  scale = np.max(np.abs(want))
  return float(np.max(np.abs(got - want)) / (scale if scale > 0 else 1.0))


def timesteps(num_timesteps, batch, rng):
  """t = 0, 1, 2, T/4, T/2, 3T/4, T−2, T−1, then random steps, [batch]."""
  T = num_timesteps
  fixed = [0, 1, 2, T // 4, T // 2, 3 * T // 4, T - 2, T - 1]
  return np.array((fixed + list(rng.integers(0, T, batch)))[:batch])


def images(shape, rng):
  """8-bit pixels rescaled to [-1, 1], with both edge values present."""
  x = rng.integers(0, 256, shape) * (2.0 / 255.0) - 1.0
  flat = x.reshape(-1)
  flat[0], flat[1] = -1.0, 1.0
  return x


def model_output(p, x0, noise, t, mean_type, var_type, near, rng):
  """A model output near the truth (small errors) or far from it (large ones).

  Mean part: the true eps / x0 / v plus 0.01·N(0,1) (near) or 1.5·N(0,1) alone
  (far). Variance part: for "learned" the true posterior log-variance plus
  0.05·N(0,1) or 3·N(0,1); for "learned_range" values in [−1, −0.9] (near the
  posterior end) or uniform in [−1, 1].
  """
  truth = {"eps": lambda: noise, "x0": lambda: x0, "v": lambda: v_target(p, x0, noise, t)}[mean_type]()
  z = rng.standard_normal(np.shape(x0))
  mean = truth + 0.01 * z if near else 1.5 * z
  if var_type == "learned":
    log_var = _at(p.post_logvar_clipped, t, x0) + (0.05 if near else 3.0) * rng.standard_normal(np.shape(x0))
    return np.concatenate([mean, log_var], axis=-1)
  if var_type == "learned_range":
    values = rng.uniform(-1.0, -0.9, np.shape(x0)) if near else rng.uniform(-1.0, 1.0, np.shape(x0))
    return np.concatenate([mean, values], axis=-1)
  return mean
