"""EDM's design space (Karras et al. 2022, Table 1) as choices of one core: preconditioning, training σ, λ(σ),
and Karras's stochastic sampler.

Everything here works in the variance-exploding variable x = x0 + σ·n, n ~ N(0, I). A denoiser D(x; σ) ≈ E[x0 | x]
is a network F wrapped by its preconditioning,

    D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)),

and the columns of the table are choices of the coefficients, of the σs drawn in training and of their weight:

| column | c_skip              | c_out            | c_in          | c_noise          | training σ               | λ(σ)             |
|--------|---------------------|------------------|---------------|------------------|--------------------------|------------------|
| "edm"  | σ_d²/(σ²+σ_d²)      | σ·σ_d/√(σ²+σ_d²) | 1/√(σ²+σ_d²)  | ¼·ln σ           | ln σ ~ N(P_mean, P_std²) | (σ²+σ_d²)/(σσ_d)² |
| "vp"   | 1                   | −σ               | 1/√(σ²+1)     | (M−1)·σ⁻¹(σ)     | σ(t), t ~ U(ε_t, 1)      | 1/σ²             |
| "ve"   | 1                   | σ                | 1             | ln(σ/2)          | log-uniform [σ_min, σ_max] | 1/σ²           |

with the VP column's σ(t) = √(exp(½β_d·t² + β_min·t) − 1). Under λ(σ) the "edm" column's effective target for F
has unit variance at every σ; "vp" is the eps-prediction DDPM and "ve" the NCSN score model, in σ. A v-prediction
DDPM is the "edm" column with σ_d = 1 and F negated (c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1)).

A DDPM model of the core (eps, x0 or v on a discrete schedule) is a denoiser through σ = √((1 − ᾱ)/ᾱ) and
x_VP = x/√(1 + σ²) (`ddpm_denoiser`, k-diffusion's change of variables), so `sample` runs every model here.
"""

import dataclasses
import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import checks
from t2i_jax.diffusion import guidance

PRECONDITIONINGS = ("edm", "vp", "ve")
METHODS = ("euler", "heun", "dpm++2m")
# The VP column's constants (EDM, Table 1; Song et al. 2021's VP SDE): β_d, β_min, the timestep scale M of the
# network's noise label, and ε_t, the lowest t drawn in training.
VP_BETA_D, VP_BETA_MIN, VP_M, VP_EPSILON_T = 19.9, 0.1, 1000, 1e-5
RHO = 7.0


@dataclasses.dataclass(frozen=True)
class Design:
  """One column of EDM's table: how a network becomes a denoiser, and how it trains and samples.

  Attributes:
    preconditioning: "edm", "vp" or "ve" (the module docstring's table).
    sigma_data: σ_d, the data's standard deviation ("edm" only). 0.5 suits images in [-1, 1] whose pixels spread
      like natural images'; measure your data's with `data_sigma`.
    p_mean, p_std: the log-normal training σ of "edm" (EDM: −1.2, 1.2, tuned on CIFAR-10 at 32 px).
    sigma_min, sigma_max: the sampler's σ range (EDM: 0.002, 80), and "ve"'s training range (its paper: 0.02, 100).
  """
  preconditioning: str = "edm"
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  def __post_init__(self):
    checks.check_choice("preconditioning", self.preconditioning, PRECONDITIONINGS)
    if not 0 < self.sigma_min < self.sigma_max:
      raise ValueError(f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}: the σ range needs "
                       "0 < sigma_min < sigma_max (EDM: 0.002 and 80).")
    if not self.sigma_data > 0 or not self.p_std > 0:
      raise ValueError(f"sigma_data={self.sigma_data}, p_std={self.p_std} must both be positive (EDM: 0.5, 1.2).")

  @classmethod
  def from_config(cls, diffusion_config) -> Optional["Design"]:
    """The design of a diffusion config section, or None for the discrete DDPM formulation
    (preconditioning None)."""
    if diffusion_config.preconditioning is None:
      return None
    return cls(**{f.name: diffusion_config[f.name] for f in dataclasses.fields(cls)})


def vp_sigma(t):
  """The VP column's σ(t) = √(exp(½β_d·t² + β_min·t) − 1), t in (0, 1]."""
  return jnp.sqrt(jnp.expm1(0.5 * VP_BETA_D * t ** 2 + VP_BETA_MIN * t))


def vp_sigma_inv(sigma):
  """t(σ), the inverse of `vp_sigma`."""
  return (jnp.sqrt(VP_BETA_MIN ** 2 + 2.0 * VP_BETA_D * jnp.log1p(sigma ** 2)) - VP_BETA_MIN) / VP_BETA_D


def coefficients(design: Design, sigma):
  """(c_skip, c_out, c_in, c_noise), each shaped like sigma (float32 [B])."""
  sigma = jnp.asarray(sigma, jnp.float32)
  if design.preconditioning == "edm":
    sd2 = design.sigma_data ** 2
    return (sd2 / (sigma ** 2 + sd2), sigma * design.sigma_data * jax.lax.rsqrt(sigma ** 2 + sd2),
            jax.lax.rsqrt(sigma ** 2 + sd2), 0.25 * jnp.log(sigma))
  ones = jnp.ones_like(sigma)
  if design.preconditioning == "vp":
    return ones, -sigma, jax.lax.rsqrt(sigma ** 2 + 1.0), (VP_M - 1) * vp_sigma_inv(sigma)
  return ones, sigma, ones, jnp.log(0.5 * sigma)


def _bcast(v, x):
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def denoise(network_fn: Callable, design: Design, x, sigma, cond=None):
  """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise).

  Args:
    network_fn: F, (x_in [B, ..., C], c_noise float32 [B], cond) -> [B, ..., C] (a U-Net reading c_noise as its
      timestep: `models.denoise_fn`, optionally wrapped by `guidance.classifier_free`, which is linear in F and so
      in D).
    x: noisy inputs [B, ..., C] in the VE variable; sigma: float32 [B] (or a scalar).
  """
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
  c_skip, c_out, c_in, c_noise = coefficients(design, sigma)
  out = network_fn(_bcast(c_in, x) * x, c_noise, cond).astype(jnp.float32)
  return _bcast(c_skip, x) * x + _bcast(c_out, x) * out


def training_sigmas(design: Design, key: jax.Array, batch_size: int) -> jax.Array:
  """The σ of each training example, float32 [batch_size], drawn from the column's distribution."""
  if design.preconditioning == "edm":
    return jnp.exp(design.p_mean + design.p_std * jax.random.normal(key, (batch_size,), jnp.float32))
  u = jax.random.uniform(key, (batch_size,), jnp.float32)
  if design.preconditioning == "vp":
    return vp_sigma(1.0 + u * (VP_EPSILON_T - 1.0))
  return design.sigma_min * (design.sigma_max / design.sigma_min) ** u


def loss_weight(design: Design, sigma):
  """λ(σ), float32 like sigma."""
  sigma = jnp.asarray(sigma, jnp.float32)
  if design.preconditioning == "edm":
    return (sigma ** 2 + design.sigma_data ** 2) / (sigma * design.sigma_data) ** 2
  return 1.0 / sigma ** 2


def training_loss(network_fn: Callable, design: Design, x0, sigma, noise, cond=None) -> jax.Array:
  """λ(σ)·‖D(x0 + σ·n; σ) − x0‖², averaged over each example's elements: float32 [B].

  The average (EDM sums) keeps the loss's scale independent of the image size, as the DDPM losses here do.
  """
  x = x0 + _bcast(sigma, x0) * noise
  sq = jnp.square(denoise(network_fn, design, x, sigma, cond) - x0)
  return loss_weight(design, sigma) * jnp.mean(sq, axis=tuple(range(1, x0.ndim)))


def data_sigma(images) -> float:
  """σ_d of images [N, ...]: the root mean square of their values. EDM's c_skip balances the second moment of
  the data (its derivation takes zero mean), so data whose mean is far from 0, such as dark backgrounds, count
  it in (NVlabs/edm#21 asks how to set σ_data)."""
  return float(jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(images, jnp.float32)))))


def check_num_steps(num_steps) -> None:
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
    raise ValueError(f"num_steps={num_steps!r}: the Karras grid needs at least 2 steps (EDM: 18 for Heun).")


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = RHO) -> jax.Array:
  """σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for i < N, then σ_N = 0: [N + 1].

  sigma_min, sigma_max: numbers or arrays (a schedule's own range, traced); the grid takes sigma_max's dtype.
  """
  check_num_steps(num_steps)
  lo, hi = checks.concrete_or_none(sigma_min), checks.concrete_or_none(sigma_max)
  if lo is not None and hi is not None and not 0 < lo < hi:
    raise ValueError(f"sigma_min={sigma_min}, sigma_max={sigma_max}: the grid needs 0 < sigma_min < sigma_max.")
  ramp = jnp.arange(num_steps, dtype=jnp.asarray(sigma_max).dtype) / (num_steps - 1)
  hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
  return jnp.append((hi + ramp * (lo - hi)) ** rho, 0.0)


@dataclasses.dataclass(frozen=True)
class Churn:
  """Karras's stochasticity (Alg. 2): at σ_i in [s_min, s_max] the state is first noised up to
  σ̂ = σ_i·(1 + γ), γ = min(amount/N, √2 − 1), with fresh noise scaled by `noise`. amount 0: deterministic.
  EDM's best for ImageNet-64: amount 40, s_min 0.05, s_max 50, noise 1.003."""
  amount: float = 0.0
  s_min: float = 0.0
  s_max: float = float("inf")
  noise: float = 1.0

  def __post_init__(self):
    if not (self.amount >= 0 and math.isfinite(self.amount)):
      raise ValueError(f"churn={self.amount!r}: S_churn must be a finite number ≥ 0 (0: deterministic; EDM: 40–80).")
    if not 0 <= self.s_min <= self.s_max:
      raise ValueError(f"churn range [{self.s_min}, {self.s_max}]: needs 0 ≤ S_min ≤ S_max (EDM: 0.05, 50).")
    if not self.noise > 0:
      raise ValueError(f"churn noise={self.noise!r}: S_noise must be positive (EDM: 1.003; 1: none inflated).")


def dpm_2m_data(x0, prev_x0, h, h_prev, second_order):
  """DPM-Solver++(2M)'s data term (Lu et al. 2022): x0 + (x0 − x0_prev)/(2r), r = h_prev/h, where second_order;
  x0 elsewhere (the first step, and the step to σ = 0 whose h is infinite)."""
  coef = jnp.where(second_order, jnp.where(second_order, h, 0.0) / (2.0 * jnp.where(second_order, h_prev, 1.0)), 0.0)
  return x0 + coef * (x0 - prev_x0)


def dpm_2m_update(x, sigma, sigma_next, x0, prev_x0, h_prev, second_order):
  """One DPM-Solver++(2M) step from σ to σ_next in the VE variable (samplers.dpm_solver_2m_update is the same
  step in the VP variable of a discrete schedule).

  With λ = −ln σ and h = λ_next − λ: x_next = (σ_next/σ)·x + (1 − e^{−h})·`dpm_2m_data`. Returns (x_next, h).
  """
  ratio = sigma_next / sigma  # e^{−h}, 0 on the step to σ = 0
  h = jnp.log(sigma) - jnp.log(jnp.where(sigma_next > 0, sigma_next, 1.0))
  data = dpm_2m_data(x0, prev_x0, h, h_prev, second_order & (sigma_next > 0))
  return ratio * x + (1.0 - ratio) * data, h


def sample(denoiser: Callable, x_start, sigmas, key: jax.Array, *, method: str = "heun", churn: Churn = Churn(),
           project: Optional[Callable] = None, return_x0: bool = False):
  """Integrates from σ_0 to σ_N = 0 as one lax.scan; call it inside jit.

  Args:
    denoiser: (x [B, ...], σ float32 []) -> D(x; σ) [B, ...].
    x_start: the state at sigmas[0] (noise times σ_0 for a VE model).
    sigmas: float32 [N + 1], decreasing, ending in 0 (`karras_sigmas`).
    method: "euler" (N evaluations), "heun" (Karras Alg. 2: a second-order correction on every step but the last,
      2N − 1 evaluations) or "dpm++2m" (N; no churn).
    churn: Karras's stochastic churn for euler and heun; key draws its noise.
    project: optional (x, σ, i) -> x applied after each step (inpainting's known region).
  Returns:
    x0 [B, ...], or (x0, the denoised prediction of every step [N, B, ...]).
  """
  checks.check_choice("method", method, METHODS)
  num_steps = sigmas.shape[0] - 1
  if method == "dpm++2m" and churn.amount > 0:
    raise ValueError(f"churn={churn.amount}: DPM-Solver++(2M) is deterministic here; use euler or heun with churn.")
  gamma_max = min(churn.amount / num_steps, math.sqrt(2.0) - 1.0)
  project = project or (lambda x, sigma, i: x)

  def karras_step(x, i, second_order):
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    if churn.amount > 0:
      gamma = jnp.where((sigma >= churn.s_min) & (sigma <= churn.s_max), gamma_max, 0.0)
      sigma_hat = sigma * (1.0 + gamma)
      eps = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype) * churn.noise
      # √(σ̂² − σ²) written as σ·√(γ(2 + γ)): exactly 0 at γ = 0, where the difference of squares, fused into
      # one multiply-add by XLA, can round below 0 and make a NaN.
      x = x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * eps
      sigma = sigma_hat
    x0 = denoiser(x, sigma)
    d = (x - x0) / sigma
    x_next = x + (sigma_next - sigma) * d
    if second_order:
      d_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
      x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
    return project(x_next, sigma_next, i), x0

  if method == "dpm++2m":
    def step(carry, i):
      x, prev_x0, h_prev = carry
      x0 = denoiser(x, sigmas[i])
      x_next, h = dpm_2m_update(x, sigmas[i], sigmas[i + 1], x0, prev_x0, h_prev, i > 0)
      return (project(x_next, sigmas[i + 1], i), x0, h), (x0 if return_x0 else None)

    (x, _, _), x0s = jax.lax.scan(step, (x_start, jnp.zeros_like(x_start), jnp.float32(1.0)), jnp.arange(num_steps))
    return (x, x0s) if return_x0 else x

  heun = method == "heun"

  def scan_step(x, i):
    x_next, x0 = karras_step(x, i, heun)
    return x_next, (x0 if return_x0 else None)

  # Heun's correction would divide by σ_N = 0 on the last step, which is Euler's (Karras Alg. 2, line 8).
  x, x0s = jax.lax.scan(scan_step, x_start, jnp.arange(num_steps - 1 if heun else num_steps))
  if heun:
    x, x0_last = karras_step(x, num_steps - 1, False)
    if return_x0:
      x0s = jnp.concatenate([x0s, x0_last[None]], axis=0)
  return (x, x0s) if return_x0 else x


def nearest_timestep(sigma_all: jax.Array, sigma) -> jax.Array:
  """The index t (int32 []) of the schedule σ nearest to σ in log space; sigma_all [T] = √((1 − ᾱ)/ᾱ)."""
  return jnp.argmin(jnp.abs(jnp.log(sigma_all) - jnp.log(sigma))).astype(jnp.int32)


def ddpm_denoiser(predict_x0: Callable, sigma_all: jax.Array) -> Callable:
  """A DDPM model of the core as a denoiser D(x; σ) (k-diffusion's change of variables).

  predict_x0: (x_VP [B, ...], t int32 [B]) -> the model's x0 prediction; sigma_all: float32 [T], each timestep's
  σ = √((1 − ᾱ)/ᾱ). The model reads x_VP = x/√(1 + σ²) at the timestep whose σ is nearest (exact on a grid
  snapped to the schedule, as `samplers.karras_sigmas` makes; within half a step for churn's σ̂).
  """
  def denoiser(x, sigma):
    t = jnp.full((x.shape[0],), nearest_timestep(sigma_all, sigma), jnp.int32)
    return predict_x0(x * jax.lax.rsqrt(1.0 + sigma ** 2), t)

  return denoiser


def sample_network(network_fn, design: Design, shape, key: jax.Array, *, method: str, num_steps: int, cond=None,
                   churn: Churn = Churn(), denoised_fn=None, x_T: Optional[jax.Array] = None, return_x0=False):
  """Samples a network trained in `design`'s column from σ_max to 0 on the Karras grid, as one compiled loop.

  Args:
    network_fn: F, (x_in, c_noise [B], cond) -> [B, ...] (`models.denoise_fn`, optionally classifier-free
      guided); pass a Partial over params so new params do not recompile.
    shape: (B, ..., C); key: the noise (same key, same images); method: one of METHODS; num_steps: N ≥ 2.
    churn: edm.Churn (static: another churn recompiles); denoised_fn: x0 -> x0 on every D (thresholding).
    x_T: optional unit-variance starting noise [shape] (default: drawn from key); the loop starts at σ_max·x_T.
  Returns:
    samples [shape], or (samples, D of every step [N, *shape]).
  """
  checks.check_choice("method", method, METHODS)
  check_num_steps(num_steps)
  return _sample_network_jit(guidance.as_pytree_fn(network_fn), cond, key, guidance.as_pytree_fn(denoised_fn), x_T,
                             design=design, shape=tuple(shape), method=method, num_steps=num_steps, churn=churn,
                             return_x0=return_x0)


@functools.partial(jax.jit, static_argnames=("design", "shape", "method", "num_steps", "churn", "return_x0"))
def _sample_network_jit(network_fn, cond, key, denoised_fn, x_T, *, design, shape, method, num_steps, churn,
                        return_x0):
  sigmas = karras_sigmas(num_steps, design.sigma_min, design.sigma_max)
  init_key, loop_key = jax.random.split(key)
  if x_T is None:
    x_T = jax.random.normal(init_key, shape, jnp.float32)

  def denoiser(x, sigma):
    x0 = denoise(network_fn, design, x, sigma, cond)
    return x0 if denoised_fn is None else denoised_fn(x0)

  return sample(denoiser, sigmas[0] * jnp.asarray(x_T, jnp.float32), sigmas, loop_key, method=method, churn=churn,
                return_x0=return_x0)
