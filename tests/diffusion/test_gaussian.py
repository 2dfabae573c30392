"""q, its posterior and the model's reverse step p against the reference formulas.

Agreement is measured as max |ours − reference| / max |reference| per array:
1e-6 with jax_enable_x64 (float64 schedules), 2e-4 in the default float32.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion import schedules
from tests.diffusion import reference

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
SHAPE = (16, 2, 2, 3)  # 16 timesteps per call, NHWC


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _pair(name, dtype):
  """(library Schedule, reference Process) for a named 1000-step schedule or a respacing of it."""
  base, _, spacing = name.partition("/")
  betas = schedules.beta_schedule(base, 1000)
  ref_betas = reference.beta_schedule(base, 1000)
  if spacing:
    s, _ = schedules.respace(betas, schedules.space_timesteps(1000, spacing), dtype=dtype)
    return s, reference.Process(reference.respace(ref_betas, reference.space_timesteps(1000, spacing))[0])
  return schedules.make_schedule(betas, dtype=dtype), reference.Process(ref_betas)


def _f32(x):
  return np.asarray(x, np.float32).astype(np.float64)


def _check_q_and_p(s, p, dtype, tol, seed):
  """Compares q_mean_variance, q_sample, q_posterior and every p_mean_variance variant."""
  rng = np.random.default_rng(seed)
  t = reference.timesteps(p.T, SHAPE[0], rng)
  x0, noise = _f32(reference.images(SHAPE, rng)), _f32(rng.standard_normal(SHAPE))
  tj = jnp.asarray(t, jnp.int32)
  errors = {}

  got = gaussian.q_mean_variance(s, jnp.asarray(x0, dtype), tj)
  for name, g, w in zip(("q_mean", "q_var", "q_logvar"), got, reference.q_mean_variance(p, x0, t)):
    assert g.dtype == dtype
    errors[name] = reference.scaled_error(g, w)
  x_t = gaussian.q_sample(s, jnp.asarray(x0, dtype), tj, jnp.asarray(noise, dtype))
  errors["q_sample"] = reference.scaled_error(x_t, reference.q_sample(p, x0, t, noise))
  # Both sides get the same x_t, so p is compared as a function of its inputs.
  x_t = np.asarray(x_t, np.float64)
  got = gaussian.q_posterior(s, jnp.asarray(x0, dtype), jnp.asarray(x_t, dtype), tj)
  for name, g, w in zip(("post_mean", "post_var", "post_logvar"), got, reference.q_posterior(p, x0, x_t, t)):
    errors[name] = reference.scaled_error(g, w)

  for mean_type, var_type, near in itertools.product(MEAN_TYPES, VAR_TYPES, (True, False)):
    out = _f32(reference.model_output(p, x0, noise, t, mean_type, var_type, near, rng))
    for clip in (True, False):
      got = gaussian.p_mean_variance(
          s, jnp.asarray(out, dtype), jnp.asarray(x_t, dtype), tj,
          mean_type=mean_type, var_type=var_type, clip_denoised=clip)
      want = reference.p_mean_variance(p, out, x_t, t, mean_type, var_type, clip)
      for key in ("mean", "variance", "log_variance", "pred_x0"):
        assert got[key].dtype == dtype and got[key].shape == SHAPE
        errors[f"p.{key}[{mean_type},{var_type},near={near},clip={clip}]"] = reference.scaled_error(got[key], want[key])
  bad = {k: v for k, v in errors.items() if not v <= tol}
  assert not bad, f"errors above {tol}: {bad}"
  return errors


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine/10,15,20"])
def test_q_and_p_match_reference_x64(x64, name):
  s, p = _pair(name, jnp.float64)
  errors = _check_q_and_p(s, p, jnp.float64, 1e-6, seed=1)
  # Far tighter than the tolerance: these are the same formulas in float64.
  assert max(errors.values()) < 1e-11


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_and_p_match_reference_float32(name):
  s, p = _pair(name, jnp.float32)
  _check_q_and_p(s, p, jnp.float32, 2e-4, seed=2)


# ----------------------------------------------------------------------------
# Properties of q.


def test_q_sample_statistics():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))
  p = reference.Process(reference.beta_schedule("cosine", 1000))
  x0 = jnp.asarray(reference.images((1, 4, 4, 3), np.random.default_rng(3)), jnp.float32)
  n = 20000
  for t in (0, 500, 999):
    noise = jax.random.normal(jax.random.key(t), (n, 4, 4, 3))
    x_t = np.asarray(gaussian.q_sample(s, jnp.broadcast_to(x0, noise.shape), jnp.full((n,), t), noise), np.float64)
    mean, var = x_t.mean(axis=0), x_t.var(axis=0)
    want_mean, want_var = np.sqrt(p.abar[t]) * np.asarray(x0[0]), 1.0 - p.abar[t]
    # Five standard errors per element: sd/sqrt(n) for the mean, var·sqrt(2/n) for the variance.
    assert np.all(np.abs(mean - want_mean) < 5 * np.sqrt(want_var / n)), t
    assert np.all(np.abs(var - want_var) < 5 * want_var * np.sqrt(2.0 / n)), t


@pytest.mark.parametrize("t", [1, 5, 25, 49])
def test_q_posterior_matches_sampled_chain(t):
  """Regressing x_{t-1} on x_t (for fixed x0) recovers q(x_{t-1} | x_t, x0).

  The chain is sampled with the forward process only: x_{t-1} ~ q(x_{t-1} | x0),
  then x_t ~ q(x_t | x_{t-1}). Its conditional law is Gaussian, linear in x_t,
  so least squares estimates the posterior mean coefficients and its residual
  variance the posterior variance.
  """
  p = reference.Process(reference.beta_schedule("cosine", 50))
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 50))
  rng = np.random.default_rng(t)
  n = 100_000
  for x0 in (-0.8, 0.1, 1.0):
    x_prev = np.sqrt(p.abar_prev[t]) * x0 + np.sqrt(1.0 - p.abar_prev[t]) * rng.standard_normal(n)
    x_t = np.sqrt(1.0 - p.betas[t]) * x_prev + np.sqrt(p.betas[t]) * rng.standard_normal(n)
    design = np.stack([np.ones(n), x_t], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, x_prev, rcond=None)
    resid_var = np.mean((x_prev - design @ np.array([intercept, slope])) ** 2)

    tt = jnp.array([t, t])
    mean, var, _ = gaussian.q_posterior(s, jnp.full((2, 1), x0), jnp.array([[0.0], [1.0]]), tt)
    want_intercept, want_slope = float(mean[0, 0]), float(mean[1, 0] - mean[0, 0])
    want_var = float(var[0, 0])
    se_slope = np.sqrt(want_var / (n * np.var(x_t)))
    se_intercept = np.sqrt(want_var / n * (1.0 + np.mean(x_t) ** 2 / np.var(x_t)))
    assert abs(slope - want_slope) < 5 * se_slope, (x0, slope, want_slope)
    assert abs(intercept - want_intercept) < 5 * se_intercept, (x0, intercept, want_intercept)
    assert abs(resid_var - want_var) < 5 * want_var * np.sqrt(2.0 / n), (x0, resid_var, want_var)


def test_q_variance_keeps_float32_precision_near_t0():
  """1 − ᾱ_0 ≈ 4e-5: recomputed in float32 it would be off by ~1e-3 relative."""
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))
  p = reference.Process(reference.beta_schedule("cosine", 1000))
  t = np.array([0, 1, 2, 10, 500, 999])
  _, var, log_var = gaussian.q_mean_variance(s, jnp.zeros((6, 1)), jnp.asarray(t))
  np.testing.assert_allclose(var[:, 0], 1.0 - p.abar[t], rtol=1e-6)
  np.testing.assert_allclose(log_var[:, 0], np.log1p(-p.abar[t]), rtol=1e-6)


def test_q_posterior_at_t0_is_x0():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))
  x0, x_t = jnp.full((1, 3), 0.3), jnp.full((1, 3), -2.0)
  mean, var, log_var = gaussian.q_posterior(s, x0, x_t, jnp.array([0]))
  np.testing.assert_allclose(mean, x0, rtol=1e-6)
  np.testing.assert_array_equal(var, 0.0)
  np.testing.assert_allclose(log_var, np.log(float(s.posterior_variance[1])), rtol=1e-6)


# ----------------------------------------------------------------------------
# Parameterisations of the model output.


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_conversions_are_mutually_inverse_x64(x64, name):
  s, p = _pair(name, jnp.float64)
  rng = np.random.default_rng(4)
  t = reference.timesteps(p.T, SHAPE[0], rng)
  x0, eps = reference.images(SHAPE, rng), rng.standard_normal(SHAPE)
  tj = jnp.asarray(t)
  x_t = gaussian.q_sample(s, x0, tj, eps)
  v = gaussian.v_from_x0_eps(s, jnp.asarray(x0), jnp.asarray(eps), tj)
  np.testing.assert_allclose(v, reference.v_target(p, x0, eps, t), rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(gaussian.x0_from_v(s, x_t, tj, v), x0, atol=1e-12)
  np.testing.assert_allclose(gaussian.eps_from_v(s, x_t, tj, v), eps, atol=1e-12)
  np.testing.assert_allclose(gaussian.eps_from_x0(s, x_t, tj, jnp.asarray(x0)), eps, atol=1e-9)
  # x0 from eps amplifies rounding by sqrt(1/ᾱ) ≈ 3e4 at the last cosine step.
  np.testing.assert_allclose(gaussian.x0_from_eps(s, x_t, tj, jnp.asarray(eps)), x0, atol=1e-10)


@pytest.mark.parametrize("mean_type", MEAN_TYPES)
def test_oracle_output_gives_true_posterior_x64(x64, mean_type):
  s, p = _pair("cosine", jnp.float64)
  rng = np.random.default_rng(5)
  t = reference.timesteps(p.T, SHAPE[0], rng)
  x0, eps = reference.images(SHAPE, rng), rng.standard_normal(SHAPE)
  tj = jnp.asarray(t)
  x_t = gaussian.q_sample(s, x0, tj, eps)
  truth = {"eps": eps, "x0": x0, "v": reference.v_target(p, x0, eps, t)}[mean_type]
  out = gaussian.p_mean_variance(s, jnp.asarray(truth), x_t, tj, mean_type=mean_type, var_type="fixed_small",
                                 clip_denoised=False)
  np.testing.assert_allclose(out["pred_x0"], x0, atol=1e-10)
  want_mean, want_var, want_log_var = gaussian.q_posterior(s, jnp.asarray(x0), x_t, tj)
  np.testing.assert_allclose(out["mean"], want_mean, atol=1e-10)
  np.testing.assert_allclose(out["variance"], want_var, rtol=1e-14)
  np.testing.assert_allclose(out["log_variance"], want_log_var, rtol=1e-14)


def test_variance_choices():
  s = schedules.make_schedule(schedules.beta_schedule("linear", 1000), dtype=jnp.float32)
  t = jnp.array([0, 1, 500, 999])
  x_t = jnp.zeros((4, 1, 1, 2))
  lo = np.log(np.asarray(s.posterior_variance)[1:])
  lo = np.concatenate([lo[:1], lo])
  hi = np.log(np.asarray(s.betas, np.float64))
  hi_fixed = hi.copy()
  hi_fixed[0] = lo[1]

  def log_var(var_type, values=None):
    if values is not None:
      output = jnp.concatenate([jnp.zeros_like(x_t), jnp.broadcast_to(values, x_t.shape)], axis=-1)
    else:
      output = jnp.zeros_like(x_t)
    out = gaussian.p_mean_variance(s, output, x_t, t, mean_type="eps", var_type=var_type)
    if var_type == "fixed_small":
      # As in the reference: the variance at t = 0 is the true β̃_0 = 0, only its log is clipped.
      np.testing.assert_array_equal(out["variance"][0], 0.0)
      np.testing.assert_allclose(out["variance"][1:], np.exp(out["log_variance"][1:]), rtol=1e-6)
    else:
      np.testing.assert_allclose(out["variance"], np.exp(out["log_variance"]), rtol=1e-6)
    return np.asarray(out["log_variance"][:, 0, 0, 0], np.float64)

  np.testing.assert_allclose(log_var("fixed_small"), lo[[0, 1, 500, 999]], rtol=1e-6)
  # fixed_large is log β_t except at t = 0, where it borrows β̃_1.
  np.testing.assert_allclose(log_var("fixed_large"), hi_fixed[[0, 1, 500, 999]], rtol=1e-6)
  np.testing.assert_allclose(log_var("learned_range", -1.0), lo[[0, 1, 500, 999]], rtol=1e-6)
  np.testing.assert_allclose(log_var("learned_range", 1.0), hi[[0, 1, 500, 999]], rtol=1e-6)
  np.testing.assert_allclose(log_var("learned_range", 0.0), (lo + hi)[[0, 1, 500, 999]] / 2, rtol=1e-6)
  np.testing.assert_allclose(log_var("learned", -3.25), -3.25)


def test_model_output_dtype_does_not_lower_math_precision():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  x_t = jnp.ones((2, 2, 2, 3), jnp.float32)
  out16 = jnp.full((2, 2, 2, 6), 0.25, jnp.bfloat16)
  got = gaussian.p_mean_variance(s, out16, x_t, jnp.array([3, 90]), mean_type="eps", var_type="learned_range")
  want = gaussian.p_mean_variance(s, out16.astype(jnp.float32), x_t, jnp.array([3, 90]), mean_type="eps",
                                  var_type="learned_range")
  for key in want:
    assert got[key].dtype == jnp.float32
    np.testing.assert_array_equal(got[key], want[key])


def test_denoised_fn_runs_before_clipping():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  x_t = jnp.zeros((1, 1, 1, 2))
  out = gaussian.p_mean_variance(s, jnp.full((1, 1, 1, 2), 0.5), x_t, jnp.array([10]), mean_type="x0",
                                 var_type="fixed_small", denoised_fn=lambda x: 4.0 * x)
  np.testing.assert_allclose(out["pred_x0"], 1.0)  # 4 · 0.5 = 2, then clipped


# ----------------------------------------------------------------------------
# Bad input.


def _schedule_and_inputs():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  return s, jnp.zeros((2, 2, 2, 3)), jnp.array([0, 99])


def test_unknown_mean_type_lists_choices():
  s, x, t = _schedule_and_inputs()
  with pytest.raises(ValueError, match=r"mean_type='epsilon' is not supported; use one of 'eps', 'x0', 'v'"):
    gaussian.p_mean_variance(s, x, x, t, mean_type="epsilon", var_type="fixed_small")


def test_unknown_var_type_lists_choices():
  s, x, t = _schedule_and_inputs()
  with pytest.raises(
      ValueError,
      match=r"var_type='small' is not supported; use one of 'fixed_small', 'fixed_large', 'learned', 'learned_range'",
  ):
    gaussian.p_mean_variance(s, x, x, t, mean_type="eps", var_type="small")


@pytest.mark.parametrize("bad_t", [[0, 100], [-1, 5]])
def test_timestep_out_of_range(bad_t):
  s, x, _ = _schedule_and_inputs()
  t = jnp.array(bad_t)
  match = r"t holds timesteps in \[-?\d+, \d+\] but the schedule has 100 steps; valid indices are 0..99"
  with pytest.raises(ValueError, match=match):
    gaussian.p_mean_variance(s, x, x, t, mean_type="eps", var_type="fixed_small")
  with pytest.raises(ValueError, match=match):
    gaussian.q_sample(s, x, t, x)
  with pytest.raises(ValueError, match=match):
    gaussian.q_posterior(s, x, x, t)
  with pytest.raises(ValueError, match=match):
    gaussian.q_mean_variance(s, x, t)


def test_float_timesteps_rejected():
  s, x, _ = _schedule_and_inputs()
  with pytest.raises(ValueError, match="t must hold integer timestep indices"):
    gaussian.q_sample(s, x, jnp.array([0.5, 1.0]), x)


@pytest.mark.parametrize(
    "var_type,channels,match",
    [
        ("learned_range", 3, r"var_type='learned_range' needs 6 channels \(mean then variance channels\)"),
        ("learned", 4, r"var_type='learned' needs 6 channels"),
        ("fixed_small", 6, r"var_type='fixed_small' needs 3 channels \(mean channels only\)"),
    ],
)
def test_model_output_channel_count(var_type, channels, match):
  s, x, t = _schedule_and_inputs()
  output = jnp.zeros((2, 2, 2, channels))
  with pytest.raises(ValueError, match=r"model_output has shape \(2, 2, 2, %d\) but x_t has shape \(2, 2, 2, 3\)" % channels):
    gaussian.p_mean_variance(s, output, x, t, mean_type="eps", var_type=var_type)
  with pytest.raises(ValueError, match=match):
    gaussian.p_mean_variance(s, output, x, t, mean_type="eps", var_type=var_type)


def test_model_output_batch_mismatch():
  s, x, t = _schedule_and_inputs()
  with pytest.raises(ValueError, match="same leading dimensions as x_t"):
    gaussian.p_mean_variance(s, jnp.zeros((3, 2, 2, 3)), x, t, mean_type="eps", var_type="fixed_small")
