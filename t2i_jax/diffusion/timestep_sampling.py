"""Timestep sampling for diffusion training: uniform, loss-aware importance sampling, logit-normal.

Every sampler returns `(t, weights)`: int32 [B] timestep indices and float32 [B]
importance weights. A training loss is `mean(weights * per_example_loss)`. For
the uniform and loss-aware samplers the weights make that an unbiased estimate
of the uniform-average loss over t, so they change the variance of the gradient,
never what it converges to. The logit-normal sampler (Esser et al., 2024) is the
exception by design: its weights are 1, so it reweights the objective toward
the middle of the noise range.

The loss-aware sampler is the LossSecondMomentResampler of Improved DDPM
(Nichol & Dhariwal 2021; openai/improved-diffusion, resample.py): p_t is
proportional to the root mean square of the last H losses seen at t, mixed with
a little uniform probability. Its history is a `LossHistoryState` pytree that the
train state carries and checkpoints; nothing is kept in module or object state.

Where this file and the reference differ:
- The history is float32 (the reference keeps float64).
- Draws come from `jax.random.choice` (inverse CDF) with an explicit key, so the
  numbers differ from numpy's, though the distribution is the same.
- Before warm-up the weights are exactly 1.0 rather than 1/(T·(1/T)) in floating
  point, and a warmed-up history whose RMS losses sum to zero or to a non-finite
  value falls back to uniform sampling instead of producing NaN probabilities.
"""

import functools
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.diffusion import checks

SAMPLER_NAMES = ("uniform", "loss-second-moment", "logit-normal")
DEFAULT_HISTORY_PER_TERM = 10
DEFAULT_UNIFORM_PROB = 0.001
# The tail component's default: t/T = sigmoid(N(4, 0.3²)) ∈ [0.96, 0.99], the nearly-pure-noise levels.
DEFAULT_TAIL_MEAN = 4.0
DEFAULT_TAIL_STD = 0.3
# The logit-normal sampler's parameters as `sample_timesteps` takes them, which is also their name in a
# config's diffusion section (train.diffusion_loss reads them, t2i_jax.config_keys accepts them).
LOGIT_NORMAL_KEYS = ("logit_mean", "logit_std", "logit_uniform_fraction", "logit_tail_fraction", "logit_tail_mean",
                     "logit_tail_std")


def _check_positive_int(arg_name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{arg_name} must be a positive integer, got {value!r}.")
  return int(value)


def _check_uniform_prob(uniform_prob) -> None:
  value = checks.concrete_or_none(uniform_prob)
  if value is not None and not (value.ndim == 0 and 0.0 <= float(value) <= 1.0):
    raise ValueError(f"uniform_prob must be a scalar in [0, 1], got {uniform_prob!r}.")


def sample_uniform(key: jax.Array, batch_size: int, num_timesteps: int):
  """Draws timesteps uniformly from 0..T-1.

  Args:
    key: a PRNG key.
    batch_size: B, a Python int (static under jit).
    num_timesteps: T, a Python int.

  Returns:
    (t, weights): int32 [B] indices and float32 [B] ones.
  """
  batch_size = _check_positive_int("batch_size", batch_size)
  num_timesteps = _check_positive_int("num_timesteps", num_timesteps)
  t = jax.random.randint(key, (batch_size,), 0, num_timesteps, dtype=jnp.int32)
  return t, jnp.ones((batch_size,), dtype=jnp.float32)


def sample_logit_normal(key: jax.Array, batch_size: int, num_timesteps: int, mean=0.0, std=1.0,
                        uniform_fraction=0.0, tail_fraction=0.0, tail_mean=DEFAULT_TAIL_MEAN,
                        tail_std=DEFAULT_TAIL_STD):
  """Draws timesteps whose fraction t/T is logit-normal: sigmoid(N(mean, std²)) (Esser et al., 2024).

  Unlike the other samplers this one *reweights the objective* (weights are 1):
  it trains the middle noise levels, where a caption decides what is drawn, more
  often than the nearly clean and the nearly pure-noise ends. mean > 0 shifts
  the mass toward noisier steps. A narrow std starves both ends, so
  `uniform_fraction` of the draws (in expectation) can come from the uniform
  distribution instead: p(t) = (1 − u)·logit-normal + u/T. A second, "tail"
  logit-normal component of weight h trains a band of noise levels on its own:
  p(t) = (1 − u − h)·logit-normal(mean, std) + u/T + h·logit-normal(tail_mean, tail_std).
  Its defaults, sigmoid(N(4, 0.3²)), put t/T in [0.96, 0.99]: x_t is nearly pure
  noise and the x0 target is the caption's mean image, where the layout a caption
  names (which object goes on which side) has to come from the caption alone and
  a narrow main component trains almost never (experiments/shapes_full).

  Args:
    key: a PRNG key.
    batch_size: B, a Python int.
    num_timesteps: T, a Python int.
    mean, std: the normal distribution of logit(t/T); std > 0.
    uniform_fraction: u in [0, 1], the weight of the uniform component (0: none,
      and the draws are those of the pure logit-normal sampler on the same key).
    tail_fraction: h in [0, 1 − u], the weight of the tail component (0: none, and
      the draws are those of the two-component sampler on the same key).
    tail_mean, tail_std: the normal distribution of logit(t/T) in the tail; tail_std > 0.

  Returns:
    (t, weights): int32 [B] indices in 0..T-1 and float32 [B] ones.
  """
  batch_size = _check_positive_int("batch_size", batch_size)
  num_timesteps = _check_positive_int("num_timesteps", num_timesteps)
  for name, value in (("std", std), ("tail_std", tail_std)):
    concrete = checks.concrete_or_none(value)
    if concrete is not None and not float(concrete) > 0:
      raise ValueError(f"the logit-normal timestep sampler needs {name} > 0, got {value!r} (Esser et al. use std 1.0).")
  u_value = checks.concrete_or_none(uniform_fraction)
  if u_value is not None and not 0.0 <= float(u_value) <= 1.0:
    raise ValueError(f"uniform_fraction must lie in [0, 1], got {uniform_fraction!r} (0 turns the mixture off).")
  h_value = checks.concrete_or_none(tail_fraction)
  if h_value is not None and not 0.0 <= float(h_value) <= 1.0 - float(u_value if u_value is not None else 0.0):
    raise ValueError(f"tail_fraction must lie in [0, 1 − uniform_fraction], got {tail_fraction!r} with "
                     f"uniform_fraction={uniform_fraction!r} (0 turns the tail off).")
  with_tail = h_value is None or float(h_value) > 0
  mixed = u_value is None or float(u_value) > 0 or with_tail
  normal_key, uniform_key, choice_key = jax.random.split(key, 3) if mixed else (key, None, None)

  def draw(component_key, loc, scale):  # t with t/T = sigmoid(N(loc, scale²)), binned
    fraction = jax.nn.sigmoid(loc + scale * jax.random.normal(component_key, (batch_size,), jnp.float32))
    return jnp.clip(jnp.floor(fraction * num_timesteps), 0, num_timesteps - 1).astype(jnp.int32)

  t = draw(normal_key, mean, std)
  if mixed:
    # One uniform number picks each draw's component: [0, u) uniform, [u, u + h) tail, the rest the
    # main one; with h = 0 the draws are the two-component sampler's on the same key.
    choice = jax.random.uniform(choice_key, (batch_size,))
    uniform_t = jax.random.randint(uniform_key, (batch_size,), 0, num_timesteps)
    if with_tail:
      tail_t = draw(jax.random.fold_in(key, 3), tail_mean, tail_std)
      t = jnp.where((choice >= uniform_fraction) & (choice < uniform_fraction + tail_fraction), tail_t, t)
    t = jnp.where(choice < uniform_fraction, uniform_t, t)
  return t, jnp.ones((batch_size,), dtype=jnp.float32)


@flax.struct.dataclass
class LossHistoryState:
  """The most recent training losses per timestep, for loss-aware sampling.

  Only arrays, so it passes through jit and Orbax / flax.serialization like any
  pytree; T and H are read from the shapes.

  Attributes:
    history: float32 [T, H]; row t holds the losses seen at t, oldest first, in
      its first counts[t] entries (the rest are 0).
    counts: int32 [T]; how many losses row t holds, at most H.
  """

  history: jax.Array
  counts: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.history.shape[0]

  @property
  def history_per_term(self) -> int:
    return self.history.shape[1]


def init_loss_history(
    num_timesteps: int, history_per_term: int = DEFAULT_HISTORY_PER_TERM
) -> LossHistoryState:
  """An empty history: zeros float32 [T, H] and counts int32 [T] of 0."""
  num_timesteps = _check_positive_int("num_timesteps", num_timesteps)
  history_per_term = _check_positive_int("history_per_term", history_per_term)
  return LossHistoryState(
      history=jnp.zeros((num_timesteps, history_per_term), dtype=jnp.float32),
      counts=jnp.zeros((num_timesteps,), dtype=jnp.int32),
  )


def _check_state(state) -> None:
  if not isinstance(state, LossHistoryState):
    raise ValueError(
        f"state must be a LossHistoryState (see init_loss_history), got {type(state).__name__}."
    )
  num_timesteps = state.history.shape[0] if state.history.ndim == 2 else None
  if state.history.ndim != 2 or 0 in state.history.shape or state.counts.shape != (num_timesteps,):
    raise ValueError(
        f"LossHistoryState needs history [T, H] and counts [T] with T, H >= 1; got history "
        f"{tuple(state.history.shape)} and counts {tuple(state.counts.shape)}."
    )


# The public functions validate concrete inputs and then call these jitted
# cores: one compiled program per shape instead of dozens of eager ops, and the
# same program whether the caller is itself jitted or not.
@jax.jit
def _probs_and_fallback(state: LossHistoryState, uniform_prob):
  """(p float32 [T], use_uniform bool scalar) for a validated state."""
  num_timesteps, history_per_term = state.history.shape
  warmed_up = jnp.all(state.counts == history_per_term)
  rms = jnp.sqrt(jnp.mean(jnp.square(state.history.astype(jnp.float32)), axis=-1))
  total = jnp.sum(rms)
  # A zero or non-finite total would make p NaN and choice() return garbage
  # indices without an error; uniform sampling keeps training well defined.
  use_uniform = ~warmed_up | ~jnp.isfinite(total) | (total <= 0)
  p = rms / jnp.where(use_uniform, 1.0, total)
  p = p * (1.0 - uniform_prob) + uniform_prob / num_timesteps
  uniform = jnp.full((num_timesteps,), 1.0 / num_timesteps, dtype=jnp.float32)
  return jnp.where(use_uniform, uniform, p).astype(jnp.float32), use_uniform


def loss_aware_probs(state: LossHistoryState, uniform_prob=DEFAULT_UNIFORM_PROB) -> jax.Array:
  """Sampling probabilities over timesteps, float32 [T], summing to 1.

  Uniform until every timestep holds H losses; after that
  p_t ∝ sqrt(mean_h history[t, h]²), mixed as p·(1 - u) + u/T so that every
  timestep keeps at least u/T and its importance weight stays bounded by 1/u.

  Args:
    state: the loss history.
    uniform_prob: u in [0, 1], the probability mass spread uniformly.
  """
  _check_state(state)
  _check_uniform_prob(uniform_prob)
  return _probs_and_fallback(state, uniform_prob)[0]


def sample_loss_aware(
    state: LossHistoryState, key: jax.Array, batch_size: int, uniform_prob=DEFAULT_UNIFORM_PROB
):
  """Draws timesteps from `loss_aware_probs(state)` with importance weights.

  Args:
    state: the loss history, T timesteps.
    key: a PRNG key.
    batch_size: B, a Python int (static under jit).
    uniform_prob: u in [0, 1], see `loss_aware_probs`.

  Returns:
    (t, weights): int32 [B] indices and float32 [B] weights 1/(T·p_t), so that
    E[weights · L(t)] = mean over t of L(t). All ones before warm-up.
  """
  _check_state(state)
  _check_uniform_prob(uniform_prob)
  batch_size = _check_positive_int("batch_size", batch_size)
  return _sample_loss_aware(state, key, batch_size, uniform_prob)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _sample_loss_aware(state: LossHistoryState, key, batch_size: int, uniform_prob):
  num_timesteps = state.history.shape[0]
  p, use_uniform = _probs_and_fallback(state, uniform_prob)
  t = jax.random.choice(key, num_timesteps, shape=(batch_size,), p=p).astype(jnp.int32)
  weights = jnp.where(use_uniform, 1.0, 1.0 / (num_timesteps * p[t]))
  return t, weights.astype(jnp.float32)


def update_loss_history(state: LossHistoryState, t: jax.Array, losses: jax.Array) -> LossHistoryState:
  """Appends each (t[i], losses[i]) to the history, in batch order.

  Exactly the reference's sequential rule, also when a timestep repeats within
  the batch: a row with fewer than H losses takes the new one at index
  counts[t]; a full row drops its oldest loss and puts the new one last.

  In multi-device training pass the global batch's `t` and `losses` (as the
  reference all-gathers them), so that every device ends with the same state.

  Args:
    state: the loss history, T timesteps of H losses.
    t: int [B] timestep indices in 0..T-1.
    losses: float [B] per-example losses at those timesteps; no gradient flows
      into the history.

  Returns:
    The new LossHistoryState.
  """
  _check_state(state)
  num_timesteps, history_per_term = state.history.shape
  if jnp.ndim(t) != 1 or jnp.shape(losses) != jnp.shape(t):
    raise ValueError(
        f"t and losses must both be [B] vectors of the same length; got shapes "
        f"{tuple(jnp.shape(t))} and {tuple(jnp.shape(losses))}."
    )
  checks.check_timesteps(t, num_timesteps)
  return _update_loss_history(state, jnp.asarray(t).astype(jnp.int32), jnp.asarray(losses))


@jax.jit
def _update_loss_history(state: LossHistoryState, t: jax.Array, losses: jax.Array) -> LossHistoryState:
  history_per_term = state.history.shape[1]
  losses = jax.lax.stop_gradient(losses).astype(state.history.dtype)

  def step(carry, pair):
    history, counts = carry
    ti, loss = pair
    row, count = history[ti], counts[ti]
    shifted = jnp.concatenate([row[1:], loss[None]])
    written = row.at[jnp.minimum(count, history_per_term - 1)].set(loss)
    row = jnp.where(count >= history_per_term, shifted, written)
    history = history.at[ti].set(row)
    counts = counts.at[ti].set(jnp.minimum(count + 1, history_per_term))
    return (history, counts), None

  (history, counts), _ = jax.lax.scan(step, (state.history, state.counts), (t, losses))
  return LossHistoryState(history=history, counts=counts)


def sample_timesteps(
    name: str,
    key: jax.Array,
    batch_size: int,
    num_timesteps: int,
    state: Optional[LossHistoryState] = None,
    *,
    uniform_prob=DEFAULT_UNIFORM_PROB,
    logit_mean=0.0,
    logit_std=1.0,
    logit_uniform_fraction=0.0,
    logit_tail_fraction=0.0,
    logit_tail_mean=DEFAULT_TAIL_MEAN,
    logit_tail_std=DEFAULT_TAIL_STD,
):
  """Draws (t int32 [B], weights float32 [B]) with the sampler named by a config.

  Args:
    name: "uniform", "loss-second-moment" or "logit-normal".
    key: a PRNG key.
    batch_size: B, a Python int.
    num_timesteps: T, a Python int; must match the state's T for the loss-aware sampler.
    state: the LossHistoryState, required by "loss-second-moment", ignored by "uniform".
    uniform_prob: u for "loss-second-moment", see `loss_aware_probs`.
    logit_mean, logit_std: the distribution of logit(t/T) for "logit-normal".
    logit_uniform_fraction: the weight of its uniform component, see `sample_logit_normal`.
    logit_tail_fraction, logit_tail_mean, logit_tail_std: its tail component, see `sample_logit_normal`.
  """
  checks.check_choice("timestep sampler name", name, SAMPLER_NAMES)
  if name == "uniform":
    return sample_uniform(key, batch_size, num_timesteps)
  if name == "logit-normal":
    return sample_logit_normal(key, batch_size, num_timesteps, logit_mean, logit_std, logit_uniform_fraction,
                               logit_tail_fraction, logit_tail_mean, logit_tail_std)
  if state is None:
    raise ValueError(
        "sample_timesteps('loss-second-moment', ...) needs state=LossHistoryState; create one with "
        "init_loss_history(num_timesteps), update it with update_loss_history(state, t, losses) "
        "after each step, or use name='uniform'."
    )
  _check_state(state)
  num_timesteps = _check_positive_int("num_timesteps", num_timesteps)
  if state.history.shape[0] != num_timesteps:
    raise ValueError(
        f"state holds losses for {state.history.shape[0]} timesteps but num_timesteps={num_timesteps}; "
        f"build it with init_loss_history({num_timesteps})."
    )
  return sample_loss_aware(state, key, batch_size, uniform_prob)
