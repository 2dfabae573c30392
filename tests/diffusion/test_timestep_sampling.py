"""Tests for uniform and loss-aware (Improved DDPM) timestep sampling."""

import inspect
import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t2i_jax.diffusion import timestep_sampling as ts


# Sampling compiles once per (T, H, B); the tests share these shapes to keep the file fast.
T, B = 16, 4096


def reference_update(history, counts, t, losses):
  """improved-diffusion's LossSecondMomentResampler.update_with_all_losses, in plain Python."""
  history = [list(row) for row in history]
  counts = list(counts)
  size = len(history[0])
  for ti, loss in zip(t, losses):
    if counts[ti] == size:
      history[ti][:-1] = history[ti][1:]
      history[ti][-1] = loss
    else:
      history[ti][counts[ti]] = loss
      counts[ti] += 1
  return np.array(history, dtype=np.float32), np.array(counts, dtype=np.int32)


def reference_probs(history, uniform_prob):
  """The reference's weights() after warm-up, in float64 numpy."""
  w = np.sqrt(np.mean(np.asarray(history, np.float64) ** 2, axis=-1))
  w = w / w.sum()
  return w * (1 - uniform_prob) + uniform_prob / len(w)


def warmed_state(per_t_losses, history_per_term=10):
  """A full history in which every loss seen at t was per_t_losses[t], built through the update."""
  per_t_losses = np.asarray(per_t_losses, np.float32)
  num_timesteps = per_t_losses.size
  t = np.tile(np.arange(num_timesteps, dtype=np.int32), history_per_term)
  state = ts.init_loss_history(num_timesteps, history_per_term)
  return ts.update_loss_history(state, t, per_t_losses[t])


def test_uniform_covers_range_with_unit_weights():
  t, w = ts.sample_uniform(jax.random.key(0), B, T)
  assert t.dtype == jnp.int32 and t.shape == (B,)
  assert w.dtype == jnp.float32 and np.all(np.asarray(w) == 1.0)
  counts = np.bincount(np.asarray(t), minlength=T)
  assert counts.size == T and counts.min() > 0
  # Each count is Binomial(B, 1/T): std ≈ 15.5, so 6 std is a loose, safe bound.
  np.testing.assert_allclose(counts, B / T, atol=6 * np.sqrt(B * (1 / T) * (1 - 1 / T)))


def _normal_cdf(z):
  return np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])


@pytest.mark.parametrize("mean, std, u, h", [(0.0, 1.0, 0.0, 0.0), (0.8, 0.6, 0.0, 0.0), (0.0, 0.5, 0.3, 0.0),
                                             (0.0, 0.5, 0.3, 0.25), (0.0, 0.5, 0.0, 0.5)])
def test_logit_normal_matches_its_distribution(mean, std, u, h):
  # P(t = k) = (1 − u − h)·[Φ((logit((k+1)/T) − m)/s) − Φ((logit(k/T) − m)/s)] + u/T + h·(the same
  # with the tail's m = 1.5, s = 0.4): the bins of sigmoid(N(m, s²)), mixed with the uniform
  # distribution and the tail.
  t, w = ts.sample_logit_normal(jax.random.key(1), B, T, mean, std, u, h, tail_mean=1.5, tail_std=0.4)
  assert t.dtype == jnp.int32 and np.all(np.asarray(w) == 1.0)
  edges = np.arange(T + 1) / T
  with np.errstate(divide="ignore"):
    logits = np.log(edges) - np.log1p(-edges)
  cdf = ((1 - u - h) * _normal_cdf((logits - mean) / std) + u * edges
         + h * _normal_cdf((logits - 1.5) / 0.4))
  expected = B * np.diff(cdf)
  counts = np.bincount(np.asarray(t), minlength=T)
  assert counts.size == T
  # Each count is about Poisson(expected): 6 standard deviations, plus one for the emptiest bins.
  assert np.all(np.abs(counts - expected) <= 6 * np.sqrt(expected) + 1), (counts, expected.round())
  middle = counts[T // 4: 3 * T // 4].sum() / B
  assert middle == pytest.approx(cdf[3 * T // 4] - cdf[T // 4], abs=0.03)
  if mean == 0.0 and h == 0.0:
    # Centred, the middle half of the range gets far more than half the draws (uniform: 50%).
    assert middle > 0.7
  if h > 0:
    # sigmoid(N(1.5, 0.4²)) > 0.75 for 90% of the tail's draws; the main component puts ~1% there.
    assert np.mean(np.asarray(t) >= 3 * T // 4) == pytest.approx(1 - cdf[3 * T // 4], abs=0.03)
    assert np.mean(np.asarray(t) >= 3 * T // 4) > 0.85 * h
  if u > 0:
    # The uniform part alone reaches the ends: sigmoid(N(0, 0.5²)) puts ~3e-8 of its draws in the last
    # bin (logit(15/16) = 5.4 std), the mixture u/T = 1.9%.
    assert np.mean(np.asarray(t) == T - 1) == pytest.approx(u / T, abs=0.006)


def test_init_loss_history_shapes_and_dtypes():
  state = ts.init_loss_history(5, 3)
  assert state.history.shape == (5, 3) and state.history.dtype == jnp.float32
  assert state.counts.shape == (5,) and state.counts.dtype == jnp.int32
  assert state.num_timesteps == 5 and state.history_per_term == 3
  assert float(jnp.abs(state.history).sum()) == 0.0 and int(state.counts.sum()) == 0
  assert ts.init_loss_history(1000).history.shape == (1000, 10)


def test_update_hand_worked_repeats_and_overflow():
  state = ts.init_loss_history(4, 3)
  t1 = np.array([0, 0, 1, 0, 0, 2, 0, 1], np.int32)
  l1 = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32)
  state = ts.update_loss_history(state, t1, l1)
  # t=0 receives 1, 2, 4 (full), then 5 and 7 each shift out the oldest.
  expected_history = np.array([[4, 5, 7], [3, 8, 0], [6, 0, 0], [0, 0, 0]], np.float32)
  np.testing.assert_array_equal(state.history, expected_history)
  np.testing.assert_array_equal(state.counts, [3, 2, 1, 0])
  ref_h, ref_c = reference_update(np.zeros((4, 3)), np.zeros(4, int), t1, l1)
  np.testing.assert_array_equal(state.history, ref_h)
  np.testing.assert_array_equal(state.counts, ref_c)

  # A second batch continues from the first: t=1 fills and then overflows twice.
  t2 = np.array([1, 1, 1, 3, 2], np.int32)
  l2 = np.array([9, 10, 11, 12, 13], np.float32)
  state = ts.update_loss_history(state, t2, l2)
  np.testing.assert_array_equal(
      state.history, np.array([[4, 5, 7], [9, 10, 11], [6, 13, 0], [12, 0, 0]], np.float32)
  )
  np.testing.assert_array_equal(state.counts, [3, 3, 2, 1])
  ref_h, ref_c = reference_update(ref_h, ref_c, t2, l2)
  np.testing.assert_array_equal(state.history, ref_h)
  np.testing.assert_array_equal(state.counts, ref_c)


def test_update_matches_reference_on_random_batches_jitted():
  rng = np.random.default_rng(0)
  update = jax.jit(ts.update_loss_history)
  state = ts.init_loss_history(6, 4)
  ref_h, ref_c = np.zeros((6, 4), np.float32), np.zeros(6, np.int32)
  for _ in range(5):
    # Heavy repetition: 37 draws over 6 timesteps, skewed towards t=0.
    t = rng.choice(6, size=37, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05]).astype(np.int32)
    losses = rng.standard_normal(37).astype(np.float32)
    state = update(state, t, losses)
    ref_h, ref_c = reference_update(ref_h, ref_c, t, losses)
    np.testing.assert_array_equal(state.history, ref_h)
    np.testing.assert_array_equal(state.counts, ref_c)


def test_probs_uniform_until_warmed_up():
  state = warmed_state(np.arange(1, T + 1, dtype=np.float32))
  # Drop one loss from t=4: one short row keeps the whole sampler uniform.
  state = state.replace(counts=state.counts.at[4].set(9))
  np.testing.assert_array_equal(ts.loss_aware_probs(state), np.full(T, 1 / T, np.float32))
  t, w = ts.sample_loss_aware(state, jax.random.key(1), B)
  assert t.dtype == jnp.int32 and w.dtype == jnp.float32
  assert np.all(np.asarray(w) == 1.0)
  assert set(np.unique(np.asarray(t))) == set(range(T))
  np.testing.assert_array_equal(ts.loss_aware_probs(ts.init_loss_history(8)), np.full(8, 0.125))


def test_probs_warmed_up_match_formula():
  rng = np.random.default_rng(1)
  num_timesteps, size, u = 6, 10, 0.001
  history = rng.uniform(0.1, 3.0, size=(num_timesteps, size)).astype(np.float32)
  history[2] = 0.0  # a timestep with zero loss gets exactly the floor u/T
  t = np.tile(np.arange(num_timesteps, dtype=np.int32), size)
  losses = history[t, np.repeat(np.arange(size), num_timesteps)]
  state = ts.update_loss_history(ts.init_loss_history(num_timesteps, size), t, losses)
  np.testing.assert_array_equal(state.history, history)

  p = np.asarray(ts.loss_aware_probs(state, uniform_prob=u))
  assert p.dtype == np.float32
  np.testing.assert_allclose(p, reference_probs(history, u), rtol=0, atol=1e-6)
  assert abs(p.astype(np.float64).sum() - 1.0) < 1e-6
  assert p.min() >= u / num_timesteps * (1 - 1e-6)
  np.testing.assert_allclose(p[2], u / num_timesteps, rtol=1e-6)

  # A larger uniform mix moves every probability towards 1/T by the same formula.
  np.testing.assert_allclose(
      ts.loss_aware_probs(state, uniform_prob=0.5), reference_probs(history, 0.5), atol=1e-6
  )


def test_weights_are_inverse_probabilities():
  state = warmed_state(np.geomspace(5.0, 0.01, T))
  p = np.asarray(ts.loss_aware_probs(state), np.float64)
  t, w = ts.sample_loss_aware(state, jax.random.key(2), B)
  t, w = np.asarray(t), np.asarray(w)
  np.testing.assert_allclose(w, 1.0 / (T * p[t]), rtol=1e-6)


@pytest.mark.parametrize("mismatched", [False, True])
def test_importance_sampling_is_unbiased(mismatched):
  num_timesteps = T
  losses = np.linspace(4.0, 0.05, num_timesteps)  # decreasing in t, as diffusion losses are
  # mismatched: the history came from other losses, so p is far from ∝ L and
  # the estimator has real variance; it must stay unbiased all the same.
  history_losses = np.sqrt(losses[::-1]) if mismatched else losses
  state = warmed_state(history_losses)
  p = np.asarray(ts.loss_aware_probs(state), np.float64)

  n = 200_000
  t, w = ts.sample_loss_aware(state, jax.random.key(3), n)
  values = np.asarray(w, np.float64) * losses[np.asarray(t)]
  standard_error = values.std(ddof=1) / np.sqrt(n)
  assert abs(values.mean() - losses.mean()) <= 4 * standard_error + 1e-6 * losses.mean()

  # Exactly: Σ_t p_t · w_t · L_t with the weights the sampler returns per t.
  w_per_t = np.zeros(num_timesteps)
  w_per_t[np.asarray(t)] = np.asarray(w, np.float64)
  assert np.all(w_per_t > 0), "every timestep should appear in 200k draws"
  np.testing.assert_allclose(np.sum(p * w_per_t * losses), losses.mean(), rtol=1e-6)

  # The draws follow p: each frequency within 5 binomial standard deviations.
  freq = np.bincount(np.asarray(t), minlength=num_timesteps) / n
  assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_importance_sampling_reduces_variance():
  num_timesteps = T
  losses = 10.0 * np.exp(-np.arange(num_timesteps) / 2.0) + 0.01  # heavily skewed to small t
  state = warmed_state(losses)
  p = np.asarray(ts.loss_aware_probs(state), np.float64)
  mean = losses.mean()
  var_uniform = np.mean(losses**2) - mean**2
  # Var_p[L_t / (T p_t)] = Σ_t L_t² / (T² p_t) − mean(L)².
  var_importance = np.sum(losses**2 / (num_timesteps**2 * p)) - mean**2
  assert var_uniform > 1.0
  assert 0 <= var_importance < 1e-3 * var_uniform

  # The Monte Carlo variance of the sampled estimator agrees.
  t, w = ts.sample_loss_aware(state, jax.random.key(4), B)
  values = np.asarray(w, np.float64) * losses[np.asarray(t)]
  assert values.var() < 1e-3 * var_uniform
  t_u, w_u = ts.sample_uniform(jax.random.key(4), B, num_timesteps)
  values_u = np.asarray(w_u, np.float64) * losses[np.asarray(t_u)]
  # The sample variance has standard error sqrt((μ4 − σ⁴)/n), μ4 the 4th central moment.
  fourth_moment = np.mean((losses - mean) ** 4)
  assert abs(values_u.var() - var_uniform) <= 4 * np.sqrt((fourth_moment - var_uniform**2) / B)


def test_all_zero_history_falls_back_to_uniform():
  state = warmed_state(np.zeros(T, np.float32))
  np.testing.assert_array_equal(ts.loss_aware_probs(state), np.full(T, 1 / T, np.float32))
  _, w = ts.sample_loss_aware(state, jax.random.key(5), B)
  assert np.all(np.asarray(w) == 1.0)


def test_jit_matches_eager_and_is_deterministic():
  state = warmed_state(np.geomspace(3.0, 0.1, T))
  sample = jax.jit(ts.sample_loss_aware, static_argnames=("batch_size",))
  key = jax.random.key(6)
  t_jit, w_jit = sample(state, key, batch_size=B)
  t_eager, w_eager = ts.sample_loss_aware(state, key, B)
  np.testing.assert_array_equal(t_jit, t_eager)
  np.testing.assert_allclose(w_jit, w_eager, rtol=1e-6)
  t_other, _ = sample(state, jax.random.key(7), batch_size=B)
  assert not np.array_equal(t_other, t_jit)

  t = jnp.array([0, 0, 15, 1, 0], jnp.int32)
  losses = jnp.array([0.5, 0.25, 2.0, 1.0, 4.0], jnp.float32)
  new_jit = jax.jit(ts.update_loss_history)(state, t, losses)
  new_eager = ts.update_loss_history(state, t, losses)
  np.testing.assert_array_equal(new_jit.history, new_eager.history)
  np.testing.assert_array_equal(new_jit.counts, new_eager.counts)
  np.testing.assert_array_equal(new_jit.history[0, -3:], [0.5, 0.25, 4.0])


def test_update_is_identical_with_a_sharded_global_batch():
  devices = np.array(jax.devices())
  assert devices.size == 8
  mesh = Mesh(devices, ("data",))
  rng = np.random.default_rng(2)
  t = rng.integers(0, 5, size=64).astype(np.int32)
  losses = rng.uniform(size=64).astype(np.float32)
  state = ts.init_loss_history(5, 4)
  batch = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  new = jax.jit(ts.update_loss_history, out_shardings=replicated)(
      jax.device_put(state, replicated), jax.device_put(t, batch), jax.device_put(losses, batch)
  )
  ref_h, ref_c = reference_update(np.zeros((5, 4)), np.zeros(5, int), t, losses)
  np.testing.assert_array_equal(new.history, ref_h)
  np.testing.assert_array_equal(new.counts, ref_c)


def test_no_gradient_flows_into_history():
  state = ts.init_loss_history(3, 2)
  t = jnp.array([0, 1, 2], jnp.int32)
  grad = jax.grad(lambda x: ts.update_loss_history(state, t, x * 2.0).history.sum())(jnp.ones(3))
  np.testing.assert_array_equal(grad, np.zeros(3))


def test_state_round_trips_through_serialization():
  state = warmed_state([1.0, 2.0, 3.0], history_per_term=4)
  state = ts.update_loss_history(state, jnp.array([1], jnp.int32), jnp.array([7.5], jnp.float32))
  as_dict = flax.serialization.to_state_dict(state)
  assert set(as_dict) == {"history", "counts"}
  restored = flax.serialization.from_state_dict(ts.init_loss_history(3, 4), as_dict)
  assert isinstance(restored, ts.LossHistoryState)
  np.testing.assert_array_equal(restored.history, state.history)
  np.testing.assert_array_equal(restored.counts, state.counts)
  restored = flax.serialization.from_bytes(
      ts.init_loss_history(3, 4), flax.serialization.to_bytes(state)
  )
  np.testing.assert_array_equal(restored.history, state.history)
  assert restored.counts.dtype == np.int32
  np.testing.assert_array_equal(ts.loss_aware_probs(restored), ts.loss_aware_probs(state))


def test_sample_timesteps_by_name():
  key = jax.random.key(8)
  t, w = ts.sample_timesteps("uniform", key, B, T)
  t_direct, _ = ts.sample_uniform(key, B, T)
  np.testing.assert_array_equal(t, t_direct)
  assert np.all(np.asarray(w) == 1.0)

  state = warmed_state(np.linspace(2.0, 0.1, T))
  t, w = ts.sample_timesteps("loss-second-moment", key, B, T, state)
  t_direct, w_direct = ts.sample_loss_aware(state, key, B)
  assert not np.all(np.asarray(w_direct) == 1.0)
  np.testing.assert_array_equal(t, t_direct)
  np.testing.assert_array_equal(w, w_direct)

  t, w = ts.sample_timesteps("logit-normal", key, B, T, logit_mean=0.5, logit_std=0.7)
  np.testing.assert_array_equal(t, ts.sample_logit_normal(key, B, T, 0.5, 0.7)[0])
  assert np.all(np.asarray(w) == 1.0)
  mixed = ts.sample_timesteps("logit-normal", key, B, T, logit_mean=0.5, logit_std=0.7, logit_uniform_fraction=0.2)[0]
  np.testing.assert_array_equal(mixed, ts.sample_logit_normal(key, B, T, 0.5, 0.7, 0.2)[0])
  assert not np.array_equal(mixed, t)
  # The config's names for the logit-normal parameters are sample_timesteps' keywords (diffusion_loss passes
  # them through by name).
  keywords = inspect.signature(ts.sample_timesteps).parameters
  assert all(keywords[k].kind == inspect.Parameter.KEYWORD_ONLY for k in ts.LOGIT_NORMAL_KEYS)
  # The tail's weight reaches the sampler; at weight 0 the draws are the two-component sampler's.
  tailed = ts.sample_timesteps("logit-normal", key, B, T, logit_mean=0.5, logit_std=0.7, logit_uniform_fraction=0.2,
                               logit_tail_fraction=0.3, logit_tail_mean=3.0, logit_tail_std=0.2)[0]
  np.testing.assert_array_equal(tailed, ts.sample_logit_normal(key, B, T, 0.5, 0.7, 0.2, 0.3, 3.0, 0.2)[0])
  np.testing.assert_array_equal(mixed, ts.sample_logit_normal(key, B, T, 0.5, 0.7, 0.2, 0.0)[0])
  # Only the tail's share of the draws moves, each to sigmoid(3 ± 4·0.2) ∈ [0.90, 0.98].
  moved = np.asarray(tailed) != np.asarray(mixed)
  assert np.mean(moved) == pytest.approx(0.3, abs=0.05)
  assert np.all((np.asarray(tailed)[moved] >= int(0.9 * T)) & (np.asarray(tailed)[moved] < T))


def test_bad_name_and_missing_state_raise():
  key = jax.random.key(9)
  with pytest.raises(ValueError, match=r"timestep sampler name='importance'.*'uniform', 'loss-second-moment', 'logit-normal'"):
    ts.sample_timesteps("importance", key, 4, 10)
  with pytest.raises(ValueError, match=r"needs state=LossHistoryState.*init_loss_history"):
    ts.sample_timesteps("loss-second-moment", key, 4, 10)
  with pytest.raises(ValueError, match=r"state holds losses for 5 timesteps but num_timesteps=10"):
    ts.sample_timesteps("loss-second-moment", key, 4, 10, ts.init_loss_history(5))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ts.sample_uniform(jax.random.key(0), 0, 10), "batch_size must be a positive integer, got 0"),
        (lambda: ts.sample_uniform(jax.random.key(0), 4, 0), "num_timesteps must be a positive integer, got 0"),
        (lambda: ts.init_loss_history(-3), "num_timesteps must be a positive integer, got -3"),
        (lambda: ts.init_loss_history(10, 0), "history_per_term must be a positive integer, got 0"),
        (lambda: ts.sample_loss_aware(ts.init_loss_history(4), jax.random.key(0), 0), "batch_size"),
        (lambda: ts.loss_aware_probs(ts.init_loss_history(4), uniform_prob=1.5), r"uniform_prob must be a scalar in \[0, 1\]"),
        (
            lambda: ts.update_loss_history(ts.init_loss_history(4), jnp.array([0, 4]), jnp.ones(2)),
            r"t holds timesteps in \[0, 4\] but the schedule has 4 steps",
        ),
        (
            lambda: ts.update_loss_history(ts.init_loss_history(4), jnp.array([0, 1]), jnp.ones(3)),
            r"t and losses must both be \[B\] vectors.*\(2,\) and \(3,\)",
        ),
        (lambda: ts.loss_aware_probs({"history": 0}), "state must be a LossHistoryState"),
        (lambda: ts.sample_logit_normal(jax.random.key(0), 4, 10, std=0.0), "logit-normal timestep sampler needs std > 0"),
        (lambda: ts.sample_logit_normal(jax.random.key(0), 4, 10, uniform_fraction=1.5),
         r"uniform_fraction must lie in \[0, 1\], got 1.5"),
        (lambda: ts.sample_logit_normal(jax.random.key(0), 4, 10, tail_std=-0.1),
         "logit-normal timestep sampler needs tail_std > 0, got -0.1"),
        (lambda: ts.sample_logit_normal(jax.random.key(0), 4, 10, uniform_fraction=0.3, tail_fraction=0.8),
         r"tail_fraction must lie in \[0, 1 − uniform_fraction\], got 0.8 with uniform_fraction=0.3"),
    ],
)
def test_bad_inputs_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()
