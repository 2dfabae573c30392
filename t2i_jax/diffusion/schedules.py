"""Noise schedules: named beta schedules, the Schedule pytree, timestep respacing.

All host-side math is float64 numpy; `make_schedule` stores the results as
float32 arrays (float64 when jax_enable_x64 is on), so the jitted functions that
read them never recompute a cumulative product in low precision.

Conventions follow openai/improved-diffusion: index t = 0 is the first noising
step, ᾱ_t = prod_{s<=t} (1 - β_s), and the posterior log-variance at t = 0 is
"clipped" to the value at t = 1 because the true posterior variance there is 0.
"""

import math
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.diffusion import checks

SCHEDULE_NAMES = ("linear", "cosine", "scaled_linear", "sigmoid")


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
  """Discretises a continuous ᾱ(τ), τ ∈ [0, 1], into T betas (float64 [T]).

  β_i = min(1 - ᾱ((i+1)/T) / ᾱ(i/T), max_beta); the cap keeps the last steps
  from reaching β = 1, where 1/sqrt(ᾱ) would be infinite.
  """
  taus = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  abar = np.array([alpha_bar(tau) for tau in taus], dtype=np.float64)
  return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def _cosine_alpha_bar(tau: float, s: float = 0.008) -> float:
  return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2


def _sigmoid_alpha_bar(tau: float, start: float = -3.0, end: float = 3.0, temp: float = 1.0) -> float:
  # Chen (2023), "On the importance of noise scheduling": a sigmoid in τ,
  # normalised so that ᾱ(0) = 1 and ᾱ(1) = 0.
  sig = lambda z: 1.0 / (1.0 + math.exp(-z))
  v_start, v_end = sig(start / temp), sig(end / temp)
  return (v_end - sig((tau * (end - start) + start) / temp)) / (v_end - v_start)


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
  """Named beta schedule, float64 numpy [num_timesteps].

  - "linear": Ho et al., 1e-4 → 0.02 over 1000 steps, both ends scaled by 1000/T
    so that the process keeps its shape for any T (as improved-diffusion does).
  - "cosine": Nichol & Dhariwal, ᾱ(τ) = cos²((τ + 0.008)/1.008 · π/2), β ≤ 0.999.
  - "scaled_linear": Stable Diffusion, linear in sqrt(β) from 0.00085 to 0.012.
  - "sigmoid": Chen (2023), ᾱ(τ) a sigmoid over [-3, 3] with temperature 1, β ≤ 0.999.
  """
  checks.check_choice("schedule name", name, SCHEDULE_NAMES)
  if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
    raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}.")
  if name == "linear":
    scale = 1000.0 / num_timesteps
    if scale * 0.02 >= 1.0:
      raise ValueError(
          f"the 'linear' schedule scales β_max = 0.02 by 1000/T, which reaches 1 for "
          f"num_timesteps={num_timesteps}; use num_timesteps >= 21 or the 'cosine' schedule."
      )
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
  if name == "scaled_linear":
    return np.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=np.float64) ** 2
  if name == "cosine":
    return betas_for_alpha_bar(num_timesteps, _cosine_alpha_bar)
  return betas_for_alpha_bar(num_timesteps, _sigmoid_alpha_bar)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """Shifts and scales sqrt(ᾱ) so that the last step has SNR 0 (Lin et al., 2024).

  sqrt(ᾱ_0) is kept; sqrt(ᾱ_{T-1}) becomes 0, so β_{T-1} = 1. At that step an
  eps-prediction carries no information about x0: pair this with mean_type="v".
  """
  betas = np.asarray(betas, dtype=np.float64)
  sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
  first, last = sqrt_abar[0], sqrt_abar[-1]
  sqrt_abar = (sqrt_abar - last) * first / (first - last)
  abar = sqrt_abar**2
  alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
  return 1.0 - alphas


@flax.struct.dataclass
class Schedule:
  """Per-timestep constants of a diffusion process; every array field is [T].

  A pytree, so it passes through jit, scan and sharding like any array; the
  number of steps is static.
  """

  betas: jax.Array
  log_betas: jax.Array
  alphas_cumprod: jax.Array
  alphas_cumprod_prev: jax.Array  # ᾱ_{t-1}, with ᾱ_{-1} = 1
  alphas_cumprod_next: jax.Array  # ᾱ_{t+1}, with ᾱ_T = 0
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  # The roots at t−1 and t+1 too, and the log-SNR λ = log(sqrt(ᾱ)/sqrt(1−ᾱ)):
  # formed in float64, because 1 − ᾱ in float32 keeps ~3 digits where ᾱ ≈ 1.
  sqrt_alphas_cumprod_prev: jax.Array
  sqrt_one_minus_alphas_cumprod_prev: jax.Array
  sqrt_alphas_cumprod_next: jax.Array
  sqrt_one_minus_alphas_cumprod_next: jax.Array
  log_snr: jax.Array  # −∞ where ᾱ = 0
  log_snr_prev: jax.Array  # +∞ at t = 0, where ᾱ_{-1} = 1
  log_one_minus_alphas_cumprod: jax.Array
  sqrt_recip_alphas_cumprod: jax.Array
  sqrt_recipm1_alphas_cumprod: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array  # multiplies x0 in the posterior mean
  posterior_mean_coef2: jax.Array  # multiplies x_t in the posterior mean
  fixed_large_variance: jax.Array  # β_t, with β̃_1 at t = 0 (as the reference does)
  fixed_large_log_variance: jax.Array
  num_timesteps: int = flax.struct.field(pytree_node=False)


def make_schedule(betas, dtype=None) -> Schedule:
  """Builds the Schedule for `betas` (float [T], each in (0, 1]).

  Args:
    betas: the per-step noise variances.
    dtype: storage dtype; default float32, or float64 when jax_enable_x64 is on.
  """
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1 or betas.size < 2:
    raise ValueError(f"betas must be a 1-D array of at least 2 steps, got shape {betas.shape}.")
  if not (np.all(betas > 0) and np.all(betas <= 1)):
    raise ValueError(
        f"betas must lie in (0, 1]; got min {betas.min():.3g}, max {betas.max():.3g}."
    )
  if dtype is None:
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  abar = np.cumprod(1.0 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  abar_next = np.append(abar[1:], 0.0)
  with np.errstate(divide="ignore"):  # ᾱ = 0 only with a zero-terminal-SNR schedule
    sqrt_recip = np.sqrt(1.0 / abar)
    sqrt_recipm1 = np.sqrt(1.0 / abar - 1.0)
    log_one_minus = np.log(1.0 - abar)
    log_snr = 0.5 * (np.log(abar) - log_one_minus)
    log_snr_prev = 0.5 * (np.log(abar_prev) - np.log(1.0 - abar_prev))
  posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
  clipped_variance = np.append(posterior_variance[1], posterior_variance[1:])
  fixed_large = np.append(posterior_variance[1], betas[1:])
  fields = dict(
      betas=betas,
      log_betas=np.log(betas),
      alphas_cumprod=abar,
      alphas_cumprod_prev=abar_prev,
      alphas_cumprod_next=abar_next,
      sqrt_alphas_cumprod=np.sqrt(abar),
      sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
      sqrt_alphas_cumprod_prev=np.sqrt(abar_prev),
      sqrt_one_minus_alphas_cumprod_prev=np.sqrt(1.0 - abar_prev),
      sqrt_alphas_cumprod_next=np.sqrt(abar_next),
      sqrt_one_minus_alphas_cumprod_next=np.sqrt(1.0 - abar_next),
      log_snr=log_snr,
      log_snr_prev=log_snr_prev,
      log_one_minus_alphas_cumprod=log_one_minus,
      sqrt_recip_alphas_cumprod=sqrt_recip,
      sqrt_recipm1_alphas_cumprod=sqrt_recipm1,
      posterior_variance=posterior_variance,
      posterior_log_variance_clipped=np.log(clipped_variance),
      posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
      posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
      fixed_large_variance=fixed_large,
      fixed_large_log_variance=np.log(fixed_large),
  )
  return Schedule(
      **{k: jnp.asarray(v, dtype=dtype) for k, v in fields.items()},
      num_timesteps=int(betas.size),
  )


def extract(values: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
  """values[t] shaped [B, 1, ..., 1] to broadcast against x [B, ...]."""
  return values[t].reshape(t.shape + (1,) * (x.ndim - t.ndim))


def space_timesteps(num_timesteps: int, section_counts) -> np.ndarray:
  """Sorted original timesteps to keep when respacing (int64 [N]).

  Args:
    num_timesteps: T of the original process.
    section_counts: "ddimN" for the DDIM paper's uniform integer stride (exactly N
      steps, starting at 0), or "N,M,…" / a sequence of ints: the process is cut
      into that many equal sections and section i keeps count_i steps spaced by a
      fractional stride, each position rounded half-to-even as Python's round()
      does in improved-diffusion.
  """
  if isinstance(section_counts, str) and section_counts.startswith("ddim"):
    try:
      desired = int(section_counts[len("ddim"):])
    except ValueError:
      raise ValueError(f"section_counts={section_counts!r}: expected 'ddimN' with an integer N.") from None
    for stride in range(1, num_timesteps):
      if len(range(0, num_timesteps, stride)) == desired:
        return np.arange(0, num_timesteps, stride)
    raise ValueError(
        f"section_counts={section_counts!r}: no integer stride gives exactly {desired} of "
        f"{num_timesteps} steps; use a count like 'ddim50' that divides evenly, or '{desired}'."
    )
  if isinstance(section_counts, str):
    try:
      section_counts = [int(c) for c in section_counts.split(",")]
    except ValueError:
      raise ValueError(
          f"section_counts={section_counts!r}: expected 'ddimN' or comma-separated integers like '10,15,20'."
      ) from None
  section_counts = list(section_counts)
  if not section_counts or any(c < 1 for c in section_counts):
    raise ValueError(f"section_counts={section_counts!r}: every section needs at least 1 step.")
  size_per, extra = divmod(num_timesteps, len(section_counts))
  start, kept = 0, []
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if size < count:
      raise ValueError(f"section_counts: cannot take {count} steps from a section of {size} steps.")
    stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
    position = 0.0
    for _ in range(count):
      kept.append(start + round(position))  # round() is half-to-even, as in the reference
      position += stride
    start += size
  return np.array(sorted(set(kept)), dtype=np.int64)


def logsnr_timesteps(betas, num_steps: int) -> np.ndarray:
  """Sorted timesteps whose log-SNR λ = log(ᾱ/(1−ᾱ))/2 is as close as possible to
  uniform between the first and the last step (int64 [≤ num_steps]).

  DPM-Solver (Lu et al.) recommends λ-uniform steps for pixel-space models: the
  reference's uniform stride puts a few huge λ-steps near t = 0, which a
  multistep solver's extrapolation turns into large errors. Each grid λ is snapped
  to the nearest discrete step; where two snap to the same step (the first steps
  of a linear schedule are far apart in λ) the duplicate is dropped.
  """
  betas = np.asarray(betas, dtype=np.float64)
  if num_steps < 2 or num_steps > betas.size:
    raise ValueError(f"num_steps={num_steps}: need between 2 and {betas.size} steps.")
  abar = np.cumprod(1.0 - betas)
  with np.errstate(divide="ignore"):
    lam = 0.5 * (np.log(abar) - np.log1p(-abar))
  lam = np.clip(lam, -30.0, None)  # ᾱ = 0 (zero terminal SNR) would put λ at −∞
  grid = np.linspace(lam[0], lam[-1], num_steps)
  return np.unique(np.argmin(np.abs(lam[None, :] - grid[:, None]), axis=1))


def respace(betas, use_timesteps: Sequence[int], dtype=None):
  """A schedule over a subset of steps that keeps ᾱ at every kept step.

  The new betas are β'_i = 1 - ᾱ_{k_i} / ᾱ_{k_{i-1}} over the kept steps k.

  Returns:
    (schedule, timestep_map): the respaced Schedule with N steps and an int32 [N]
    array mapping each new index to the original timestep, which is what the
    model must be given.
  """
  betas = np.asarray(betas, dtype=np.float64)
  kept = np.unique(np.asarray(list(use_timesteps), dtype=np.int64))
  if kept.size < 2 or kept[0] < 0 or kept[-1] >= betas.size:
    raise ValueError(
        f"use_timesteps must hold at least 2 distinct steps in 0..{betas.size - 1}, got {kept.size} "
        f"steps in [{kept.min() if kept.size else '-'}, {kept.max() if kept.size else '-'}]."
    )
  abar = np.cumprod(1.0 - betas)[kept]
  new_betas = 1.0 - abar / np.append(1.0, abar[:-1])
  return make_schedule(new_betas, dtype=dtype), jnp.asarray(kept, dtype=jnp.int32)
