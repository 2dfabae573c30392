"""Samplers: single reverse steps and the whole loop as one jit-compiled lax.scan.

Steps work on any schedule, respaced ones included: t indexes the schedule given,
and the model is called with timestep_map[t], the original timestep it was
trained on. Shapes: x_t, noise [B, ..., C]; model_output [B, ..., C or 2C];
t int32 [B].

Methods of `sample`:
- "ddpm": ancestral sampling, x_{t-1} ~ p(x_{t-1} | x_t) (Ho et al.).
- "ddim": DDIM with η (Song et al., eq. 12); η = 0 is deterministic.
- "dpm++2m": DPM-Solver++(2M) (Lu et al., 2022), data prediction, second order
  from the second step, first order on the last step to σ = 0.
- "euler", "heun": the probability-flow ODE in σ = sqrt((1−ᾱ)/ᾱ) on the Karras
  grid (ρ = 7, from σ = min(80, the schedule's last), Karras et al. 2022, Alg. 2,
  deterministic unless `churn` is set; edm.sample); each grid σ is snapped to the
  nearest σ of the schedule so the model sees a timestep it was trained on, as
  Karras et al. did for ADM.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import checks
from t2i_jax.diffusion import edm
from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion import guidance
from t2i_jax.diffusion.schedules import Schedule, extract

METHODS = ("ddpm", "ddim", "dpm++2m", "euler", "heun")


def _nonzero_mask(t, x):
  return (t != 0).astype(x.dtype).reshape(t.shape + (1,) * (x.ndim - 1))


def ancestral_update(out: dict, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_{t-1} = mean + σ·noise from p_mean_variance's `out`; no noise at t = 0."""
  return out["mean"] + _nonzero_mask(t, noise) * jnp.exp(0.5 * out["log_variance"]) * noise


def ddim_update(s: Schedule, out: dict, x_t, t, noise, eta) -> jax.Array:
  """DDIM's x_{t-1} from the x0 prediction in `out` (σ as in improved-diffusion)."""
  eps = gaussian.eps_from_x0(s, x_t, t, out["pred_x0"])
  # σ = η·sqrt((1−ᾱ_prev)/(1−ᾱ))·sqrt(1 − ᾱ/ᾱ_prev), where 1 − ᾱ/ᾱ_prev = β_t; the
  # roots come from the schedule so that float32 keeps its digits where ᾱ ≈ 1.
  sigma_prev_noise = extract(s.sqrt_one_minus_alphas_cumprod_prev, t, x_t)
  sigma = eta * sigma_prev_noise / extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * jnp.sqrt(
      extract(s.betas, t, x_t))
  eps_coef = jnp.sqrt(jnp.maximum(jnp.square(sigma_prev_noise) - jnp.square(sigma), 0.0))
  mean = out["pred_x0"] * extract(s.sqrt_alphas_cumprod_prev, t, x_t) + eps_coef * eps
  if noise is None:  # deterministic DDIM (η = 0) needs no noise
    return mean
  return mean + _nonzero_mask(t, x_t) * sigma * noise


def dpm_solver_2m_update(s: Schedule, x_t, t, pred_x0, prev_x0, prev_h, use_second_order):
  """One DPM-Solver++(2M) step from index t to t−1 (ᾱ_{-1} = 1, i.e. σ = 0).

  Args:
    pred_x0: the data prediction at x_t; prev_x0, prev_h: those of the previous
      step (ignored where use_second_order is False).
    use_second_order: bool; the caller turns it off on the first step. The step
      to σ = 0 is always first order (its h is infinite).

  Returns:
    (x_{t-1}, h) with h = λ_{t-1} − λ_t, λ = log(α/σ).
  """
  alpha, sigma = extract(s.sqrt_alphas_cumprod, t, x_t), extract(s.sqrt_one_minus_alphas_cumprod, t, x_t)
  alpha_prev = extract(s.sqrt_alphas_cumprod_prev, t, x_t)
  sigma_prev = extract(s.sqrt_one_minus_alphas_cumprod_prev, t, x_t)
  # e^{-h} = (σ_prev·α)/(α_prev·σ), finite (0) on the final step where h = ∞ (and on the first of a
  # zero-terminal-SNR schedule, α = 0, where the VE variable x/α of edm.dpm_2m_update is not).
  exp_neg_h = sigma_prev * alpha / (alpha_prev * sigma)
  h = extract(s.log_snr_prev, t, x_t) - extract(s.log_snr, t, x_t)
  data = edm.dpm_2m_data(pred_x0, prev_x0, h, prev_h, use_second_order & (sigma_prev > 0))
  return (sigma_prev / sigma) * x_t + alpha_prev * (1.0 - exp_neg_h) * data, h


def ddpm_step(s, model_output, x_t, t, noise, *, mean_type, var_type, clip_denoised=True, denoised_fn=None):
  """Ancestral step x_t -> x_{t-1}. Returns (x_{t-1}, pred_x0), each like x_t."""
  out = gaussian.p_mean_variance(
      s, model_output, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised,
      denoised_fn=denoised_fn,
  )
  return ancestral_update(out, t, noise), out["pred_x0"]


def ddim_step(s, model_output, x_t, t, noise, *, eta, mean_type, var_type, clip_denoised=True, denoised_fn=None):
  """DDIM step x_t -> x_{t-1} with stochasticity η. Returns (x_{t-1}, pred_x0).

  `noise` (like x_t) may be None when η = 0.
  """
  out = gaussian.p_mean_variance(
      s, model_output, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised,
      denoised_fn=denoised_fn,
  )
  return ddim_update(s, out, x_t, t, noise, eta), out["pred_x0"]


def ddim_reverse_step(s, model_output, x_t, t, *, mean_type, var_type, clip_denoised=True, denoised_fn=None):
  """Deterministic DDIM inversion x_t -> x_{t+1} (ᾱ_T = 0 past the end). Returns (x_{t+1}, pred_x0)."""
  out = gaussian.p_mean_variance(
      s, model_output, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised,
      denoised_fn=denoised_fn,
  )
  eps = gaussian.eps_from_x0(s, x_t, t, out["pred_x0"])
  alpha_next = extract(s.sqrt_alphas_cumprod_next, t, x_t)
  return out["pred_x0"] * alpha_next + extract(s.sqrt_one_minus_alphas_cumprod_next, t, x_t) * eps, out["pred_x0"]


def karras_sigmas(s: Schedule, num_steps: int, sigma_max: float = edm.Design.sigma_max):
  """The Karras σ grid over the schedule's range, capped at sigma_max, snapped to the schedule's σs.

  EDM samples every model from σ = 80 (sigma_max): the data are then 0.6% of the state. A schedule whose last σ
  is far higher (the cosine schedule's is 2·10⁴) would otherwise spend its first steps there and snap several
  grid points onto one σ, and Heun's correction over the ~30× step that follows diverges.

  Returns:
    (sigmas [num_steps + 1] decreasing, ending in 0; t [num_steps] int32 indices
    into `s` whose σ equals sigmas[:-1]).
  """
  sigma_all = s.sqrt_one_minus_alphas_cumprod / s.sqrt_alphas_cumprod
  grid = edm.karras_sigmas(num_steps, sigma_all[0], jnp.minimum(sigma_all[-1], sigma_max))[:-1]
  t = jax.vmap(lambda sigma: edm.nearest_timestep(sigma_all, sigma))(grid)
  return jnp.append(sigma_all[t], 0.0), t


def _check_sample_args(s, shape, method, mean_type, var_type, num_steps, inpaint):
  checks.check_choice("method", method, METHODS)
  checks.check_types(mean_type, var_type)
  if method in ("euler", "heun"):
    if num_steps is not None and num_steps < 2:
      raise ValueError(f"num_steps={num_steps}: the Karras grid needs at least 2 steps.")
    last_abar = checks.concrete_or_none(s.alphas_cumprod[-1])
    if last_abar is not None and last_abar <= 0:
      raise ValueError(
          f"method={method!r} integrates in σ = sqrt((1−ᾱ)/ᾱ), which is infinite at the last step of a "
          "zero-terminal-SNR schedule; use 'ddim', 'dpm++2m' or 'ddpm' with it."
      )
  if inpaint is not None:
    known, mask = inpaint
    if known.shape != tuple(shape):
      raise ValueError(f"inpaint image has shape {known.shape} but samples have shape {tuple(shape)}.")
    try:
      jnp.broadcast_shapes(mask.shape, tuple(shape))
    except ValueError:
      raise ValueError(f"inpaint mask of shape {mask.shape} does not broadcast to {tuple(shape)}.") from None


def sample(
    denoise_fn,
    s: Schedule,
    shape,
    key: jax.Array,
    *,
    method: str,
    mean_type: str,
    var_type: str,
    cond=None,
    timestep_map: Optional[jax.Array] = None,
    clip_denoised: bool = True,
    eta: float = 0.0,
    num_steps: Optional[int] = None,
    denoised_fn=None,
    grad_fn=None,
    inpaint=None,
    x_T: Optional[jax.Array] = None,
    return_x0: bool = False,
    churn: edm.Churn = edm.Churn(),
):
  """Draws samples with the whole reverse process as one jit-compiled lax.scan.

  Args:
    denoise_fn: (x_t, t, cond) -> model_output, t being original timesteps.
      Pass `jax.tree_util.Partial(apply_fn, params)` so params are arguments of
      the compiled loop rather than constants (a plain function also works).
    s: the schedule to sample on, usually respaced; for "euler"/"heun" it gives
      the noise levels the model knows (pass the full schedule) and num_steps
      the grid size.
    shape: (B, ..., C) of the samples; key: PRNG key (same key, same images).
    method: one of METHODS. eta: DDIM's η.
    cond: any pytree handed to denoise_fn (and grad_fn) unchanged.
    timestep_map: int32 [N] from schedules.respace; default identity.
    denoised_fn: x0 -> x0 applied to every x0 prediction before clipping
      (e.g. guidance.dynamic_threshold with clip_denoised=False).
    grad_fn: (x_t, t, cond) -> scaled ∇log p(y|x_t) for classifier guidance:
      condition_mean for "ddpm", condition_score for the others.
    inpaint: (known [shape], mask broadcastable to shape, 1 = known): the known
      region of x_t is replaced by q_sample(known) at every step and pasted into
      every x0 prediction; the output holds `known` exactly there.
    x_T: optional starting noise [shape] (default: drawn from `key`).
    return_x0: also return the x0 prediction of every step.
    churn: Karras's stochastic churn (edm.Churn) for "euler" and "heun"; static (another churn recompiles).

  Returns:
    x0 samples [shape], or (samples, x0 predictions [num_steps, *shape]).
  """
  _check_sample_args(s, shape, method, mean_type, var_type, num_steps, inpaint)
  if churn.amount > 0 and method not in ("euler", "heun"):
    raise ValueError(f"churn={churn.amount} is Karras's stochastic sampler; use method 'euler' or 'heun' with it.")
  if timestep_map is None:
    timestep_map = jnp.arange(s.num_timesteps, dtype=jnp.int32)
  if num_steps is None or method not in ("euler", "heun"):
    num_steps = s.num_timesteps
  return _sample_jit(
      guidance.as_pytree_fn(denoise_fn), s, key, cond, timestep_map, eta,
      guidance.as_pytree_fn(denoised_fn), guidance.as_pytree_fn(grad_fn), inpaint, x_T,
      shape=tuple(shape), method=method, mean_type=mean_type, var_type=var_type,
      clip_denoised=clip_denoised, num_steps=num_steps, return_x0=return_x0, churn=churn,
      # Deterministic DDIM draws no per-step noise (a traced η = 0 would still pay for it).
      stochastic=not (isinstance(eta, (int, float)) and eta == 0),
  )


@functools.partial(
    jax.jit,
    static_argnames=(
        "shape", "method", "mean_type", "var_type", "clip_denoised", "num_steps", "return_x0", "stochastic",
        "churn",
    ),
)
def _sample_jit(
    denoise_fn, s, key, cond, timestep_map, eta, denoised_fn, grad_fn, inpaint, x_T,
    *, shape, method, mean_type, var_type, clip_denoised, num_steps, return_x0, stochastic, churn,
):
  dtype = s.betas.dtype
  init_key, loop_key = jax.random.split(key)
  if x_T is None:
    x_T = jax.random.normal(init_key, shape, dtype)
  x_T = jnp.asarray(x_T, dtype)
  batch = shape[0]

  def process_x0(x0):
    if denoised_fn is not None:
      x0 = denoised_fn(x0)
    if inpaint is not None:
      x0 = guidance.paste_known(x0, inpaint[0].astype(dtype), inpaint[1].astype(dtype))
    return x0

  def predict(x_t, t):
    """p_mean_variance at schedule indices t, with classifier guidance applied."""
    model_output = denoise_fn(x_t, timestep_map[t], cond)
    out = gaussian.p_mean_variance(
        s, model_output, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised,
        denoised_fn=process_x0,
    )
    if grad_fn is not None:
      grad = jnp.asarray(grad_fn(x_t, timestep_map[t], cond), dtype)
      out = guidance.condition_mean(out, grad) if method == "ddpm" else guidance.condition_score(s, out, x_t, t, grad)
    return out

  def replace_known(x_prev, i, noise_key):
    """The known region of the state at schedule index i − 1 (the clean image after i = 0)."""
    if inpaint is None:
      return x_prev
    known, mask = inpaint[0].astype(dtype), inpaint[1].astype(dtype)
    t_prev = jnp.full((batch,), jnp.maximum(i - 1, 0), jnp.int32)
    noised = gaussian.q_sample(s, known, t_prev, jax.random.normal(noise_key, shape, dtype))
    return guidance.paste_known(x_prev, jnp.where(i > 0, noised, known), mask)

  if method in ("euler", "heun"):
    return _sample_karras(predict, s, x_T, loop_key, inpaint, method, num_steps, return_x0, churn)

  def step(carry, i):
    x, prev_x0, prev_h = carry
    t = jnp.full((batch,), i, jnp.int32)
    step_key, known_key = jax.random.split(jax.random.fold_in(loop_key, i))
    out = predict(x, t)
    h = prev_h
    if method == "ddpm":
      x_prev = ancestral_update(out, t, jax.random.normal(step_key, shape, dtype))
    elif method == "ddim":
      noise = jax.random.normal(step_key, shape, dtype) if stochastic else None
      x_prev = ddim_update(s, out, x, t, noise, eta)
    else:
      x_prev, h = dpm_solver_2m_update(s, x, t, out["pred_x0"], prev_x0, prev_h, i < s.num_timesteps - 1)
    x_prev = replace_known(x_prev, i, known_key)
    return (x_prev, out["pred_x0"], h), (out["pred_x0"] if return_x0 else None)

  x_start = replace_known(x_T, jnp.int32(s.num_timesteps), jax.random.fold_in(init_key, 1))
  zeros_h = jnp.zeros((batch,) + (1,) * (len(shape) - 1), dtype)
  (x, _, _), x0s = jax.lax.scan(
      step, (x_start, jnp.zeros_like(x_T), zeros_h), jnp.arange(s.num_timesteps - 1, -1, -1)
  )
  return (x, x0s) if return_x0 else x


def _sample_karras(predict, s, x_T, key, inpaint, method, num_steps, return_x0, churn):
  """Euler / Heun on the Karras σ grid snapped to the schedule (edm.sample on edm.ddpm_denoiser)."""
  sigmas, _ = karras_sigmas(s, num_steps)
  shape, dtype = x_T.shape, x_T.dtype
  sigma_all = s.sqrt_one_minus_alphas_cumprod / s.sqrt_alphas_cumprod
  denoiser = edm.ddpm_denoiser(lambda x_vp, t: predict(x_vp, t)["pred_x0"], sigma_all)

  def replace_known(x, sigma, i):
    if inpaint is None:
      return x
    known, mask = inpaint[0].astype(dtype), inpaint[1].astype(dtype)
    noise = jax.random.normal(jax.random.fold_in(key, i), shape, dtype)
    return guidance.paste_known(x, known + sigma * noise, mask)

  # x_VE = x_VP/α with α = 1/sqrt(1 + σ²); the churn's draws come from a key apart from the known region's.
  x = replace_known(x_T * jnp.sqrt(1.0 + sigmas[0] ** 2), sigmas[0], num_steps)
  return edm.sample(denoiser, x, sigmas, jax.random.fold_in(key, num_steps + 1), method=method, churn=churn,
                    project=None if inpaint is None else replace_known, return_x0=return_x0)


def ddim_invert(
    denoise_fn, s: Schedule, x: jax.Array, *, mean_type: str, var_type: str, cond=None,
    timestep_map: Optional[jax.Array] = None, clip_denoised: bool = False,
):
  """Runs deterministic DDIM backwards: the state at index 0 -> the state at index N−1.

  Args:
    x: [B, ..., C], the state at schedule index 0 (an image, when ᾱ_0 ≈ 1).
    Other arguments as in `sample`.

  Returns:
    x at index N−1 [B, ..., C]: DDIM sampling from it (method "ddim", η = 0,
    stopped before the last step) leads back to `x`, up to the O(step) mismatch of
    evaluating the model at x_t on the way up and x_{t+1} on the way down.
  """
  checks.check_types(mean_type, var_type)
  if timestep_map is None:
    timestep_map = jnp.arange(s.num_timesteps, dtype=jnp.int32)
  return _invert_jit(
      guidance.as_pytree_fn(denoise_fn), s, x, cond, timestep_map,
      mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised,
  )


@functools.partial(jax.jit, static_argnames=("mean_type", "var_type", "clip_denoised"))
def _invert_jit(denoise_fn, s, x, cond, timestep_map, *, mean_type, var_type, clip_denoised):
  x = jnp.asarray(x, s.betas.dtype)

  def step(x_t, i):
    t = jnp.full((x_t.shape[0],), i, jnp.int32)
    model_output = denoise_fn(x_t, timestep_map[t], cond)
    x_next, _ = ddim_reverse_step(
        s, model_output, x_t, t, mean_type=mean_type, var_type=var_type, clip_denoised=clip_denoised
    )
    return x_next, None

  x, _ = jax.lax.scan(step, x, jnp.arange(s.num_timesteps - 1))
  return x
