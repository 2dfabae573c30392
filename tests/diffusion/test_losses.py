"""Training losses and the variational bound against the reference formulas.

Agreement is max |ours − reference| / max |reference| per array: 1e-6 with
jax_enable_x64, 2e-4 in float32. The float32 tests also show that the naive
formulas (what reference.py evaluates, run in float32) miss that bound where the
library's cancellation-free ones meet it.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion import losses
from t2i_jax.diffusion import schedules
from tests.diffusion import reference

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")
SHAPE = (16, 2, 2, 3)
K = math.sqrt(2.0 / math.pi)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _pair(name, dtype, num_timesteps=1000):
  """(library Schedule, reference Process): "linear", "cosine" or "cosine/<spacing>"."""
  base, _, spacing = name.partition("/")
  betas = schedules.beta_schedule(base, num_timesteps)
  ref_betas = reference.beta_schedule(base, num_timesteps)
  if spacing:
    s, _ = schedules.respace(betas, schedules.space_timesteps(num_timesteps, spacing), dtype=dtype)
    kept = reference.space_timesteps(num_timesteps, spacing)
    return s, reference.Process(reference.respace(ref_betas, kept)[0])
  return schedules.make_schedule(betas, dtype=dtype), reference.Process(ref_betas)


def _f32(x):
  """Rounds to float32 (then back to float64), so both sides see the same inputs."""
  return np.asarray(x, np.float32).astype(np.float64)


def _inputs(p, shape, seed, t=None):
  rng = np.random.default_rng(seed)
  if t is None:
    t = reference.timesteps(p.T, shape[0], rng)
  x0, noise = _f32(reference.images(shape, rng)), _f32(rng.standard_normal(shape))
  return rng, np.asarray(t), x0, noise


# ----------------------------------------------------------------------------
# Elementwise pieces.


def _likelihood_inputs(n, seed):
  rng = np.random.default_rng(seed)
  x = _f32(rng.integers(0, 256, n) * (2.0 / 255.0) - 1.0)
  means = _f32(x + rng.standard_normal(n) * rng.choice([1e-3, 1e-2, 0.1, 1.0], n))
  log_scales = _f32(rng.uniform(-7.0, 1.0, n))
  return x, means, log_scales


def test_elementwise_pieces_match_reference_x64(x64):
  rng = np.random.default_rng(0)
  z = rng.uniform(-6, 6, 4000)
  assert reference.scaled_error(losses.approx_standard_normal_cdf(jnp.asarray(z)),
                                reference.approx_standard_normal_cdf(z)) < 1e-14
  m1, m2 = rng.standard_normal(4000), rng.standard_normal(4000)
  lv1, lv2 = rng.uniform(-12, 2, 4000), rng.uniform(-12, 2, 4000)
  assert reference.scaled_error(losses.normal_kl(*map(jnp.asarray, (m1, lv1, m2, lv2))),
                                reference.normal_kl(m1, lv1, m2, lv2)) < 1e-12
  # Broadcasting against scalars, as prior_bpd uses it.
  np.testing.assert_allclose(losses.normal_kl(jnp.asarray(m1), jnp.asarray(lv1), 0.0, 0.0),
                             reference.normal_kl(m1, lv1, 0.0, 0.0), rtol=1e-9, atol=1e-14)
  x, means, log_scales = _likelihood_inputs(4000, seed=1)
  got = losses.discretized_gaussian_log_likelihood(jnp.asarray(x), means=jnp.asarray(means),
                                                   log_scales=jnp.asarray(log_scales))
  want = reference.discretized_gaussian_log_likelihood(x, means, log_scales)
  # The reference's own float64 CDF difference cancels when a bin is small: its
  # error is ~1e-16 / probability (1e-5 at 1e-11). We are within ~1e-13 of a
  # 60-digit mpmath evaluation everywhere (checked outside the suite).
  accurate = want > np.log(1e-9)
  assert accurate.mean() > 0.7
  assert reference.scaled_error(np.asarray(got)[accurate], want[accurate]) < 1e-8
  assert reference.scaled_error(got, want) < 1e-5
  # The edge bins take the whole tail; the floor is the reference's 1e-12.
  assert np.any(want == np.log(1e-12)) and np.all(np.asarray(got) >= np.log(1e-12))
  np.testing.assert_allclose(np.asarray(got)[want == np.log(1e-12)], np.log(1e-12), rtol=1e-12)


def test_normal_kl_series_region_x64(x64):
  """|Δ log σ²| < 0.1 takes the Taylor branch; it must match exp(d) − 1 − d to float64 precision.

  For |d| ≥ 1e-3 the naive float64 value is itself good to ~1e-10, so this pins
  every coefficient of the series (the library truncates after d⁶, 4e-9 relative
  at |d| = 0.1) and the switch at |d| = 0.1.
  """
  d = np.concatenate([np.linspace(-0.1, -1e-3, 500), np.linspace(1e-3, 0.1, 500), [-0.1 - 1e-9, 0.1 + 1e-9]])
  lv2 = np.linspace(-9.0, 1.0, d.size)
  zeros = np.zeros_like(d)
  got = losses.normal_kl(*map(jnp.asarray, (zeros, lv2 + d, zeros, lv2)))
  np.testing.assert_allclose(got, 0.5 * (np.expm1(d) - d), rtol=1e-8)
  np.testing.assert_allclose(got, reference.normal_kl(zeros, lv2 + d, zeros, lv2), rtol=1e-8)


def test_elementwise_pieces_match_reference_float32():
  x, means, log_scales = _likelihood_inputs(4000, seed=1)
  got = losses.discretized_gaussian_log_likelihood(jnp.asarray(x, jnp.float32), means=jnp.asarray(means, jnp.float32),
                                                   log_scales=jnp.asarray(log_scales, jnp.float32))
  assert got.dtype == jnp.float32
  assert reference.scaled_error(got, reference.discretized_gaussian_log_likelihood(x, means, log_scales)) < 2e-4
  rng = np.random.default_rng(2)
  # Far stricter, per pixel, where float64 is exact enough to judge (bins > 1e-9)
  # and σ reaches e^1.5: then a − b of the tanh arguments is small next to a, and
  # subtracting them directly (rather than factoring u − l out) costs ~1e-4 nats.
  x = _f32(rng.integers(0, 256, 8000) * (2.0 / 255.0) - 1.0)
  means, log_scales = _f32(x + rng.uniform(-3.0, 3.0, 8000)), _f32(rng.uniform(-3.5, 1.5, 8000))
  got = np.asarray(losses.discretized_gaussian_log_likelihood(
      jnp.asarray(x, jnp.float32), means=jnp.asarray(means, jnp.float32),
      log_scales=jnp.asarray(log_scales, jnp.float32)), np.float64)
  want = reference.discretized_gaussian_log_likelihood(x, means, log_scales)
  judged = want > np.log(1e-9)
  assert judged.mean() > 0.5
  assert np.max(np.abs(got - want)[judged]) < 2e-5
  m1, m2 = _f32(rng.standard_normal(4000)), _f32(rng.standard_normal(4000))
  lv1, lv2 = _f32(rng.uniform(-12, 2, 4000)), _f32(rng.uniform(-12, 2, 4000))
  got = losses.normal_kl(*(jnp.asarray(a, jnp.float32) for a in (m1, lv1, m2, lv2)))
  assert reference.scaled_error(got, reference.normal_kl(m1, lv1, m2, lv2)) < 2e-4


def _naive_f32_normal_kl(m1, lv1, m2, lv2):
  """The textbook KL evaluated in float32, as a straight port would."""
  m1, lv1, m2, lv2 = (np.asarray(a, np.float32) for a in (m1, lv1, m2, lv2))
  return np.float32(0.5) * (np.float32(-1.0) + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))


def _naive_f32_log_likelihood(x, means, log_scales):
  """The reference's CDF-difference likelihood evaluated in float32."""
  x, means, log_scales = (np.asarray(a, np.float32) for a in (x, means, log_scales))
  cdf = lambda z: np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(K) * (z + np.float32(0.044715) * z**3)))
  inv = np.exp(-log_scales)
  hi = cdf(inv * (x - means + np.float32(1 / 255)))
  lo = cdf(inv * (x - means - np.float32(1 / 255)))
  prob = np.where(x < -0.999, hi, np.where(x > 0.999, np.float32(1.0) - lo, hi - lo))
  return np.log(np.maximum(prob, np.float32(1e-12)))


def test_normal_kl_nearly_equal_variances_needs_the_careful_formula():
  rng = np.random.default_rng(3)
  lv2 = _f32(rng.uniform(-10.0, 0.0, 2000))
  lv1 = _f32(lv2 + rng.choice([-1, 1], 2000) * np.logspace(-4, -2, 2000))
  m = np.zeros(2000)
  # Float64 is exact enough here: the value is ≥ ~5e-9 and the cancellation costs ~1e-16.
  want = reference.normal_kl(m, lv1, m, lv2)
  ours = losses.normal_kl(*(jnp.asarray(a, jnp.float32) for a in (m, lv1, m, lv2)))
  assert reference.scaled_error(ours, want) < 2e-5
  np.testing.assert_allclose(ours, want, rtol=2e-5)  # even elementwise
  naive = _naive_f32_normal_kl(m, lv1, m, lv2)
  assert reference.scaled_error(naive, want) > 1e-2  # exp(d) − 1 − d loses everything in float32


def _decoder_inputs(n_examples, seed):
  """x0 on the pixel grid, means up to 10σ away, σ = e^-7 … e^-5: likelihoods from ~1 down to the floor."""
  rng = np.random.default_rng(seed)
  shape = (n_examples, 4, 4, 3)
  x0 = _f32(reference.images(shape, rng))
  log_var = _f32(rng.uniform(-14.0, -10.0, shape))
  offsets = rng.uniform(0.0, 10.0, shape) * rng.choice([-1, 1], shape) * np.exp(0.5 * log_var)
  return x0, log_var, _f32(x0 + offsets)


def test_decoder_nll_with_tiny_scales_needs_the_careful_formula():
  """At t = 0 with σ ≈ 1e-3 and the mean a few σ off, the bin probability is 1e-12…1e-7.

  A float32 CDF difference rounds 1 − 1e-9 to 1 there and hits the 1e-12 floor;
  the log-space formula keeps the float64 value.
  """
  s, p = _pair("cosine", jnp.float32)
  x0, log_var, x0_pred = _decoder_inputs(32, seed=4)
  t = np.zeros(32, np.int64)
  # With mean_type x0 at t = 0 the decoder mean is the output itself (c1 = 1, c2 = 0).
  output = np.concatenate([x0_pred, log_var], axis=-1)
  x_t = x0  # x_t does not enter the decoder at t = 0
  want = reference.vb_terms_bpd(p, output, x0, x_t, t, "x0", "learned")
  ours = losses.vb_terms_bpd(s, jnp.asarray(output, jnp.float32), jnp.asarray(x0, jnp.float32),
                             jnp.asarray(x_t, jnp.float32), jnp.asarray(t), mean_type="x0", var_type="learned")
  assert reference.scaled_error(ours, want) < 2e-4
  naive = -np.mean(_naive_f32_log_likelihood(x0, x0_pred, 0.5 * log_var), axis=(1, 2, 3)) / np.log(2.0)
  assert reference.scaled_error(naive, want) > 2e-2
  # Per pixel: where the probability is in (1e-11, 1e-7) float64 is accurate and float32 naive is not.
  ll_want = reference.discretized_gaussian_log_likelihood(x0, x0_pred, 0.5 * log_var)
  ll_ours = np.asarray(losses.discretized_gaussian_log_likelihood(
      jnp.asarray(x0, jnp.float32), means=jnp.asarray(x0_pred, jnp.float32),
      log_scales=jnp.asarray(0.5 * log_var, jnp.float32)), np.float64)
  window = (ll_want > np.log(1e-11)) & (ll_want < np.log(1e-7))
  assert window.sum() > 100
  assert np.max(np.abs(ll_ours - ll_want)[window]) < 1e-3
  ll_naive = _naive_f32_log_likelihood(x0, x0_pred, 0.5 * log_var)
  assert np.max(np.abs(ll_naive - ll_want)[window]) > 1.0


# ----------------------------------------------------------------------------
# vb terms, prior and training losses against the reference.


def _output(p, x0, noise, t, mean_type, var_type, near, rng):
  return _f32(reference.model_output(p, x0, noise, t, mean_type, var_type, near, rng))


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine/ddim50"])
def test_vb_terms_and_prior_match_reference_x64(x64, name):
  s, p = _pair(name, jnp.float64)
  rng, t, x0, noise = _inputs(p, SHAPE, seed=5)
  x_t = reference.q_sample(p, x0, t, noise)
  errors = {}
  for mean_type, var_type, near, clip in itertools.product(MEAN_TYPES, VAR_TYPES, (True, False), (True, False)):
    out = _output(p, x0, noise, t, mean_type, var_type, near, rng)
    got = losses.vb_terms_bpd(s, jnp.asarray(out), jnp.asarray(x0), jnp.asarray(x_t), jnp.asarray(t),
                              mean_type=mean_type, var_type=var_type, clip_denoised=clip)
    assert got.shape == (SHAPE[0],) and got.dtype == jnp.float64
    errors[(mean_type, var_type, near, clip)] = reference.scaled_error(
        got, reference.vb_terms_bpd(p, out, x0, x_t, t, mean_type, var_type, clip))
  assert max(errors.values()) < 1e-6, errors
  assert reference.scaled_error(losses.prior_bpd(s, jnp.asarray(x0)), reference.prior_bpd(p, x0)) < 1e-6


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("name", ["linear", "cosine", "cosine/ddim50"])
def test_training_losses_match_reference_x64(x64, name, loss_type):
  s, p = _pair(name, jnp.float64)
  rng, t, x0, noise = _inputs(p, SHAPE, seed=6)
  x_t = reference.q_sample(p, x0, t, noise)
  errors = {}
  for mean_type, var_type, near in itertools.product(MEAN_TYPES, VAR_TYPES, (True, False)):
    out = _output(p, x0, noise, t, mean_type, var_type, near, rng)
    got = losses.training_losses(s, jnp.asarray(out), jnp.asarray(x0), jnp.asarray(x_t), jnp.asarray(t),
                                 jnp.asarray(noise), mean_type=mean_type, var_type=var_type, loss_type=loss_type)
    want = reference.training_losses(p, out, x0, t, noise, mean_type, var_type, loss_type)
    for key in ("loss", "mse", "vb"):
      assert got[key].shape == (SHAPE[0],)
      errors[(key, mean_type, var_type, near)] = reference.scaled_error(got[key], want[key])
  assert max(errors.values()) < 1e-6, {k: v for k, v in errors.items() if v >= 1e-6}


# vb_terms_bpd compiled at LLVM level 1 whatever the suite's level (tests/conftest.py): at level 0 the cosine
# schedule's scaled error in test_vb_terms_over_all_timesteps_float32 is 3.4e-4, at 1 and at XLA's default 3 it
# is 7.3e-5. The tests over all 1000 timesteps share it (and so its programs: the shapes are the same).
_vb_level1 = jax.jit(losses.vb_terms_bpd, static_argnames=("mean_type", "var_type"),
                     compiler_options={"xla_backend_optimization_level": 1})


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_vb_terms_over_all_timesteps_float32(name):
  """Every t of a 1000-step schedule, outputs near and far from the truth, all parameterisations."""
  s, p = _pair(name, jnp.float32)
  t = np.arange(1000)
  rng, _, x0, noise = _inputs(p, (1000, 2, 2, 3), seed=7, t=t)
  tj = jnp.asarray(t)
  x_t = _f32(gaussian.q_sample(s, jnp.asarray(x0, jnp.float32), tj, jnp.asarray(noise, jnp.float32)))
  vb = _vb_level1
  for mean_type, var_type, near in itertools.product(MEAN_TYPES, VAR_TYPES, (True, False)):
    out = _output(p, x0, noise, t, mean_type, var_type, near, rng)
    got = np.asarray(vb(s, jnp.asarray(out, jnp.float32), jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32),
                        tj, mean_type=mean_type, var_type=var_type), np.float64)
    want = reference.vb_terms_bpd(p, out, x0, x_t, t, mean_type, var_type)
    case = (mean_type, var_type, near)
    assert reference.scaled_error(got, want) < 2e-4, case
    # The KL terms alone, against their own (much smaller) scale, and each t by itself:
    # the decoder term at t = 0 must not be what makes the bound pass.
    assert reference.scaled_error(got[1:], want[1:]) < 2e-4, case
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-8, err_msg=str(case))


@pytest.mark.parametrize("name", ["cosine", "cosine/ddim50"])
def test_training_losses_match_reference_float32(name):
  s, p = _pair(name, jnp.float32)
  rng, t, x0, noise = _inputs(p, SHAPE, seed=8)
  x_t = _f32(reference.q_sample(p, x0, t, noise))
  for mean_type, var_type, near, loss_type in itertools.product(MEAN_TYPES, VAR_TYPES, (True, False), LOSS_TYPES):
    out = _output(p, x0, noise, t, mean_type, var_type, near, rng)
    got = losses.training_losses(
        s, jnp.asarray(out, jnp.float32), jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32),
        jnp.asarray(t), jnp.asarray(noise, jnp.float32), mean_type=mean_type, var_type=var_type, loss_type=loss_type)
    # reference.training_losses draws its own float64 x_t; its vb term is taken
    # again at the float32 x_t the library saw, since at low SNR an eps-model's
    # x0 = (x_t − sqrt(1−ᾱ)·eps)/sqrt(ᾱ) magnifies a one-ulp difference in x_t.
    want = reference.training_losses(p, out, x0, t, noise, mean_type, var_type, loss_type)
    want_vb = reference.vb_terms_bpd(p, out, x0, x_t, t, mean_type, var_type)
    scale = {"mse": 1.0, "rescaled_mse": p.T / 1000.0, "kl": 1.0, "rescaled_kl": float(p.T)}[loss_type]
    case = (mean_type, var_type, near, loss_type)
    assert reference.scaled_error(got["mse"], want["mse"]) < 2e-4, case
    if loss_type in ("kl", "rescaled_kl") or var_type in ("learned", "learned_range"):
      assert reference.scaled_error(got["vb"], want_vb * scale) < 2e-4, case
      assert reference.scaled_error(got["loss"], want["loss"] - want["vb"] + want_vb * scale) < 2e-4, case
    else:
      np.testing.assert_array_equal(got["vb"], 0.0)
      np.testing.assert_array_equal(got["loss"], got["mse"])


# ----------------------------------------------------------------------------
# Closed forms.


def _decoder_nll_closed_form(x0, log_var):
  """−log2 P(x0) per example when the decoder mean is x0 itself.

  The bin is symmetric about the mean, so an inner bin has probability
  CDF(u) − CDF(−u) = tanh(a) and an edge bin CDF(u) = (1 + tanh a)/2, with
  u = (1/255)/σ and a = k(u + 0.044715u³).
  """
  u = (1.0 / 255.0) * np.exp(-0.5 * np.asarray(log_var, np.float64))
  a = K * (u + 0.044715 * u**3)
  edge = np.abs(x0) > 0.999
  prob = np.where(edge, 0.5 * (1.0 + np.tanh(a)), np.tanh(a))
  return -np.mean(np.log(np.maximum(prob, 1e-12)).reshape(len(x0), -1), axis=1) / np.log(2.0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_vb_of_the_true_posterior_is_zero_kl_and_closed_form_decoder(name):
  s, p = _pair(name, jnp.float32)
  t = np.arange(1000)
  rng, _, x0, noise = _inputs(p, (1000, 2, 2, 3), seed=9, t=t)
  tj = jnp.asarray(t)
  x0j, noisej = jnp.asarray(x0, jnp.float32), jnp.asarray(noise, jnp.float32)
  x_t = gaussian.q_sample(s, x0j, tj, noisej)
  post_log_var = jnp.broadcast_to(schedules.extract(s.posterior_log_variance_clipped, tj, x0j), x0j.shape)
  vb = _vb_level1
  decoder = _decoder_nll_closed_form(x0[:1], np.log(p.post_var[1]) * np.ones_like(x0[:1]))[0]
  exact = {
      ("x0", "fixed_small"): x0j,
      ("x0", "learned"): jnp.concatenate([x0j, post_log_var], axis=-1),  # log σ² = the true log β̃_t
      ("x0", "learned_range"): jnp.concatenate([x0j, -jnp.ones_like(x0j)], axis=-1),  # v = −1 ⇒ β̃_t
  }
  for (mean_type, var_type), output in exact.items():
    got = np.asarray(vb(s, output, x0j, x_t, tj, mean_type=mean_type, var_type=var_type))
    np.testing.assert_array_equal(got[1:], 0.0)  # p is the true posterior: KL exactly 0
    np.testing.assert_allclose(got[0], decoder, rtol=1e-5)
  # eps and v oracles reach x0 through rounding: the KLs are 0 up to float32 noise.
  oracles = {"eps": noisej, "v": gaussian.v_from_x0_eps(s, x0j, noisej, tj)}
  for mean_type, output in oracles.items():
    got = np.asarray(vb(s, output, x0j, x_t, tj, mean_type=mean_type, var_type="fixed_small"))
    assert np.max(np.abs(got[1:])) < 1e-6, mean_type
    np.testing.assert_allclose(got[0], decoder, rtol=1e-4)
  # A decoder with another variance: the closed form still holds.
  log_var = np.full((1, 2, 2, 3), -9.0)
  got = losses.vb_terms_bpd(s, jnp.concatenate([x0j[:1], jnp.full((1, 2, 2, 3), -9.0)], axis=-1), x0j[:1],
                            x_t[:1], tj[:1], mean_type="x0", var_type="learned")
  np.testing.assert_allclose(got, _decoder_nll_closed_form(x0[:1], log_var), rtol=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_kl_closed_form_for_a_shifted_mean(name):
  """x̂0 = x0 + δ with the posterior variance: KL = c1²δ²/(2β̃_t) nats per pixel."""
  s, p = _pair(name, jnp.float32)
  t = np.arange(1, 1000)
  rng, _, x0, noise = _inputs(p, (999, 2, 2, 3), seed=10, t=t)
  delta = _f32(rng.uniform(-0.5, 0.5, x0.shape))
  x0j = jnp.asarray(x0, jnp.float32)
  x_t = gaussian.q_sample(s, x0j, jnp.asarray(t), jnp.asarray(noise, jnp.float32))
  got = losses.vb_terms_bpd(s, jnp.asarray(x0 + delta, jnp.float32), x0j, x_t, jnp.asarray(t),
                            mean_type="x0", var_type="fixed_small")
  c1, var = p.post_c1[t][:, None, None, None], p.post_var[t][:, None, None, None]
  want = np.mean(c1**2 * (_f32(x0 + delta) - x0) ** 2 / (2 * var), axis=(1, 2, 3)) / np.log(2.0)
  np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_prior_bpd_closed_form(name):
  """KL(N(sqrt(ᾱ)x0, 1 − ᾱ) || N(0, 1)) = ½(ᾱx0² − ᾱ − log(1 − ᾱ)) per pixel."""
  s, p = _pair(name, jnp.float32)
  _, _, x0, _ = _inputs(p, (8, 4, 4, 3), seed=11)
  abar = p.abar[-1]
  want = np.mean(0.5 * (abar * x0**2 - abar - np.log1p(-abar)), axis=(1, 2, 3)) / np.log(2.0)
  prior_bpd = jax.jit(losses.prior_bpd)  # one program per precision, not some thirty ops each
  got = prior_bpd(s, jnp.asarray(x0, jnp.float32))
  assert got.shape == (8,)
  # ᾱ_T is ~1e-9 (cosine) or ~4e-5 (linear); the result keeps float32 relative precision.
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with jax.enable_x64(True):
    s64 = schedules.make_schedule(schedules.beta_schedule(name, 1000), dtype=jnp.float64)
    np.testing.assert_allclose(prior_bpd(s64, jnp.asarray(x0)), want, rtol=1e-9)


# ----------------------------------------------------------------------------
# Training-loss properties.


@pytest.mark.parametrize("mean_type", MEAN_TYPES)
@pytest.mark.parametrize("var_type", ["fixed_small", "learned_range"])
def test_oracle_has_zero_mse(mean_type, var_type):
  s, p = _pair("cosine", jnp.float32)
  rng, t, x0, noise = _inputs(p, SHAPE, seed=12)
  x0j, noisej, tj = jnp.asarray(x0, jnp.float32), jnp.asarray(noise, jnp.float32), jnp.asarray(t)
  x_t = gaussian.q_sample(s, x0j, tj, noisej)
  truth = {"eps": noise, "x0": x0, "v": reference.v_target(p, x0, noise, t)}[mean_type]
  output = jnp.asarray(truth, jnp.float32)
  if var_type == "learned_range":
    output = jnp.concatenate([output, jnp.zeros_like(output)], axis=-1)
  got = losses.training_losses(s, output, x0j, x_t, tj, noisej, mean_type=mean_type, var_type=var_type,
                               loss_type="mse")
  assert np.max(np.asarray(got["mse"])) < 1e-12
  # A wrong output is not free: the same check would catch a target of the wrong kind.
  other = losses.training_losses(s, jnp.zeros_like(output), x0j, x_t, tj, noisej, mean_type=mean_type,
                                 var_type=var_type, loss_type="mse")
  np.testing.assert_allclose(other["mse"], np.mean(truth**2, axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("num_timesteps", [100, 1000, 4000])
def test_loss_rescaling(num_timesteps):
  s, p = _pair("cosine", jnp.float32, num_timesteps)
  rng, t, x0, noise = _inputs(p, SHAPE, seed=13)
  x_t = jnp.asarray(reference.q_sample(p, x0, t, noise), jnp.float32)
  output = jnp.asarray(_output(p, x0, noise, t, "eps", "learned_range", False, rng), jnp.float32)
  args = (s, output, jnp.asarray(x0, jnp.float32), x_t, jnp.asarray(t), jnp.asarray(noise, jnp.float32))
  run = lambda loss_type: losses.training_losses(*args, mean_type="eps", var_type="learned_range", loss_type=loss_type)
  mse, rescaled_mse, kl, rescaled_kl = (run(lt) for lt in LOSS_TYPES)
  np.testing.assert_allclose(rescaled_mse["vb"], mse["vb"] * num_timesteps / 1000.0, rtol=1e-6)
  np.testing.assert_allclose(rescaled_mse["loss"], mse["mse"] + mse["vb"] * num_timesteps / 1000.0, rtol=1e-6)
  np.testing.assert_allclose(rescaled_kl["loss"], kl["loss"] * num_timesteps, rtol=1e-6)
  # mse's vb and kl's loss are the same VLB term (the stop_gradient changes no value).
  np.testing.assert_allclose(mse["vb"], kl["loss"], rtol=1e-6)
  np.testing.assert_allclose(kl["loss"], reference.vb_terms_bpd(p, _f32(output), x0, _f32(x_t), t, "eps",
                                                                "learned_range"), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["mse", "rescaled_mse"])
def test_hybrid_loss_gradients_split_between_mean_and_variance(loss_type):
  """L_simple trains the mean; the VLB term trains only the variance."""
  T = 100
  s, p = _pair("cosine", jnp.float32, T)
  t = np.array([0, 1, 50, 99])
  rng, _, x0, noise = _inputs(p, (4, 4, 4, 3), seed=14, t=t)
  x0j, noisej, tj = jnp.asarray(x0, jnp.float32), jnp.asarray(noise, jnp.float32), jnp.asarray(t)
  x_t = gaussian.q_sample(s, x0j, tj, noisej)
  mean_out = jnp.asarray(1.3 * rng.standard_normal(x0.shape), jnp.float32)
  var_out = jnp.asarray(rng.uniform(-1, 1, x0.shape), jnp.float32)
  output = jnp.concatenate([mean_out, var_out], axis=-1)

  def total(output):
    return jnp.sum(losses.training_losses(s, output, x0j, x_t, tj, noisej, mean_type="eps",
                                          var_type="learned_range", loss_type=loss_type)["loss"])

  def vb(mean_out, var_out):
    return jnp.sum(losses.vb_terms_bpd(s, jnp.concatenate([mean_out, var_out], axis=-1), x0j, x_t, tj,
                                       mean_type="eps", var_type="learned_range"))

  grad = jax.grad(total)(output)
  pixels = 4 * 4 * 3
  # d/dm of mean_flat((eps − m)²), summed over the batch: the mse term alone.
  np.testing.assert_allclose(grad[..., :3], 2.0 * (mean_out - noisej) / pixels, rtol=1e-5, atol=1e-9)
  factor = T / 1000.0 if loss_type == "rescaled_mse" else 1.0
  vb_grad_mean, vb_grad_var = jax.grad(vb, argnums=(0, 1))(mean_out, var_out)
  np.testing.assert_allclose(grad[..., 3:], factor * vb_grad_var, rtol=1e-5, atol=1e-9)
  assert np.all(np.abs(np.asarray(vb_grad_var)).reshape(4, -1).max(axis=1) > 0)  # every example, t = 0 included
  # Without the stop_gradient the VLB would pull on the mean too: the check above is not vacuous.
  assert np.max(np.abs(np.asarray(vb_grad_mean))) > 1e-3
  # The kl loss, in contrast, trains the mean through the VLB.
  kl_grad = jax.grad(lambda o: jnp.sum(losses.training_losses(
      s, o, x0j, x_t, tj, noisej, mean_type="eps", var_type="learned_range", loss_type="kl")["loss"]))(output)
  np.testing.assert_allclose(kl_grad[..., :3], vb_grad_mean, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("mean_type", MEAN_TYPES)
def test_min_snr_weights(mean_type):
  s, p = _pair("cosine", jnp.float32)
  gamma = 5.0
  t = np.array([0, 10, 100, 200, 300, 500, 900, 999])
  snr = p.abar[t] / (1.0 - p.abar[t])
  assert snr.max() > gamma > snr.min()  # both branches of the min are exercised
  want = {"eps": np.minimum(snr, gamma) / snr, "v": np.minimum(snr, gamma) / (snr + 1.0),
          "x0": np.minimum(snr, gamma)}[mean_type]
  np.testing.assert_allclose(losses.snr(s, jnp.asarray(t)), snr, rtol=1e-5)
  np.testing.assert_allclose(losses.min_snr_weight(s, jnp.asarray(t), gamma, mean_type), want, rtol=1e-5)
  rng, _, x0, noise = _inputs(p, (8, 2, 2, 3), seed=15, t=t)
  output = jnp.asarray(_output(p, x0, noise, t, mean_type, "fixed_small", False, rng), jnp.float32)
  x_t = jnp.asarray(reference.q_sample(p, x0, t, noise), jnp.float32)
  args = (s, output, jnp.asarray(x0, jnp.float32), x_t, jnp.asarray(t), jnp.asarray(noise, jnp.float32))
  kwargs = dict(mean_type=mean_type, var_type="fixed_small", loss_type="mse")
  plain = losses.training_losses(*args, **kwargs)
  weighted = losses.training_losses(*args, **kwargs, min_snr_gamma=gamma)
  np.testing.assert_allclose(weighted["mse"], plain["mse"] * want, rtol=1e-5)
  np.testing.assert_allclose(weighted["loss"], weighted["mse"], rtol=0)


def test_min_snr_weights_at_zero_terminal_snr():
  s = schedules.make_schedule(schedules.rescale_zero_terminal_snr(schedules.beta_schedule("scaled_linear", 1000)))
  t = jnp.array([0, 999])
  np.testing.assert_array_equal(losses.min_snr_weight(s, t, 5.0, "eps")[1], 1.0)  # SNR = 0: weight 1, not NaN
  np.testing.assert_array_equal(losses.min_snr_weight(s, t, 5.0, "v")[1], 0.0)
  np.testing.assert_array_equal(losses.min_snr_weight(s, t, 5.0, "x0")[1], 0.0)


# ----------------------------------------------------------------------------
# The whole bound.


def _toy_model(x_t, t, cond):
  """A deterministic learned_range eps-model that depends on t (to catch timestep_map mistakes)."""
  scale = 1.0 if cond is None else cond[:, None, None, None]
  tf = t.astype(jnp.float32)[:, None, None, None]
  return jnp.concatenate([scale * jnp.tanh(0.7 * x_t + tf / 700.0), jnp.cos(x_t + tf / 300.0)], axis=-1)


def _loop_bpd(model_fn, s, x0, key, timestep_map, cond=None):
  """calc_bpd written as a plain Python loop over t with the same fold_in noise."""

  @jax.jit  # one program for every t: op by op, each step dispatches some sixty ops
  def terms(i, timestep_map):
    t = jnp.full((x0.shape[0],), i, jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(key, i), x0.shape, x0.dtype)
    x_t = gaussian.q_sample(s, x0, t, noise)
    output = model_fn(x_t, timestep_map[t], cond)
    vb = losses.vb_terms_bpd(s, output, x0, x_t, t, mean_type="eps", var_type="learned_range", clip_denoised=True)
    pred_x0 = gaussian.p_mean_variance(s, output, x_t, t, mean_type="eps", var_type="learned_range")["pred_x0"]
    return (vb, losses.mean_flat((pred_x0 - x0) ** 2),
            losses.mean_flat((gaussian.eps_from_x0(s, x_t, t, pred_x0) - noise) ** 2))

  vb, x0_mse, mse = zip(*(terms(i, timestep_map) for i in range(s.num_timesteps)))
  return [np.stack(a, axis=1) for a in (vb, x0_mse, mse)]


@pytest.mark.parametrize("respaced", [False, True])
def test_calc_bpd_equals_a_loop_over_timesteps(respaced):
  betas = schedules.beta_schedule("cosine", 200)
  if respaced:
    s, timestep_map = schedules.respace(betas, schedules.space_timesteps(200, "ddim10"))
  else:
    s, timestep_map = schedules.make_schedule(schedules.beta_schedule("cosine", 10)), jnp.arange(10)
  x0 = jnp.asarray(reference.images((3, 4, 4, 3), np.random.default_rng(16)), jnp.float32)
  key = jax.random.key(0)
  got = losses.calc_bpd(_toy_model, s, x0, key, mean_type="eps", var_type="learned_range",
                        timestep_map=timestep_map if respaced else None)
  vb, x0_mse, mse = _loop_bpd(_toy_model, s, x0, key, timestep_map)
  assert got["vb"].shape == (3, 10)
  np.testing.assert_allclose(got["vb"], vb, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got["x0_mse"], x0_mse, rtol=1e-5)
  np.testing.assert_allclose(got["mse"], mse, rtol=1e-5)
  np.testing.assert_allclose(got["prior_bpd"], losses.prior_bpd(s, x0), rtol=1e-6)
  np.testing.assert_allclose(got["total_bpd"], np.sum(vb, axis=1) + got["prior_bpd"], rtol=1e-5)
  if respaced:
    # The model must see the original timesteps: with the new indices the numbers change.
    unmapped, _, _ = _loop_bpd(_toy_model, s, x0, key, jnp.arange(10))
    assert np.max(np.abs(unmapped - vb)) > 1e-3


@pytest.mark.parametrize("mean_type", ["x0", "eps"])
def test_bound_of_an_oracle_is_decoder_nll_plus_prior(mean_type):
  """With p = q's posterior at every step, the whole bound is L_0 + L_T: every KL vanishes."""
  s, p = _pair("cosine", jnp.float32)
  x0 = jnp.asarray(reference.images((2, 4, 4, 3), np.random.default_rng(17)), jnp.float32)

  def oracle(x_t, t, cond):
    if mean_type == "x0":
      return jnp.broadcast_to(x0, x_t.shape)
    a = schedules.extract(s.sqrt_alphas_cumprod, t, x_t)
    return (x_t - a * x0) / schedules.extract(s.sqrt_one_minus_alphas_cumprod, t, x_t)

  got = jax.jit(lambda k: losses.calc_bpd(oracle, s, x0, k, mean_type=mean_type, var_type="fixed_small"))(
      jax.random.key(1))
  decoder = _decoder_nll_closed_form(np.asarray(x0, np.float64), np.log(p.post_var[1]) * np.ones(x0.shape))
  np.testing.assert_allclose(got["vb"][:, 0], decoder, rtol=1e-4)
  assert np.max(np.abs(np.asarray(got["vb"][:, 1:]))) < (0.0 if mean_type == "x0" else 1e-6) + 1e-30
  np.testing.assert_allclose(got["total_bpd"], decoder + np.asarray(got["prior_bpd"]), rtol=1e-4)
  # x0 from eps divides by sqrt(ᾱ) ≈ 4e-5 at the last cosine step: float32 noise of ~1e-3 there.
  np.testing.assert_allclose(got["x0_mse"], 0.0, atol=1e-8 if mean_type == "x0" else 1e-5)


def test_dataset_bpd_averages_over_examples():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 10))
  rng = np.random.default_rng(18)
  first = jnp.asarray(reference.images((3, 2, 2, 3), rng), jnp.float32)
  second = jnp.asarray(reference.images((5, 2, 2, 3), rng), jnp.float32)
  cond = jnp.asarray(rng.uniform(0.5, 1.5, 5), jnp.float32)
  key = jax.random.key(2)
  kwargs = dict(mean_type="eps", var_type="learned_range")
  got = losses.dataset_bpd(_toy_model, s, [first, {"image": second, "cond": cond}], key, **kwargs)
  a, b = jax.jit(lambda: (  # one program, not some eighty ops
      losses.calc_bpd(_toy_model, s, first, jax.random.fold_in(key, 0), **kwargs),
      losses.calc_bpd(_toy_model, s, second, jax.random.fold_in(key, 1), cond=cond, **kwargs)))()
  assert got["num_examples"] == 8
  totals = np.concatenate([a["total_bpd"], b["total_bpd"]])
  np.testing.assert_allclose(got["bpd"], totals.mean(), rtol=1e-5)  # per example, not per batch
  assert abs(got["bpd"] - (a["total_bpd"].mean() + b["total_bpd"].mean()) / 2) > 1e-6
  np.testing.assert_allclose(got["prior_bpd"], np.concatenate([a["prior_bpd"], b["prior_bpd"]]).mean(), rtol=1e-5)
  np.testing.assert_allclose(got["vb_per_t"], np.concatenate([a["vb"], b["vb"]]).mean(axis=0), rtol=1e-5)
  # The match above used the dict batch's cond, and cond is not a no-op for this model.
  probe = jnp.full((5, 1, 1, 3), 0.5)
  assert np.max(np.abs(np.asarray(_toy_model(probe, jnp.arange(5), cond) - _toy_model(probe, jnp.arange(5), None)))) > 0.1
  with pytest.raises(ValueError, match="dataset_bpd got no batches"):
    losses.dataset_bpd(_toy_model, s, [], key, **kwargs)


# ----------------------------------------------------------------------------
# Bad input.


def _args():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  x = jnp.zeros((2, 2, 2, 3))
  return s, x, jnp.array([0, 99])


def test_unknown_loss_type_lists_choices():
  s, x, t = _args()
  with pytest.raises(ValueError, match=r"loss_type='l2' is not supported; use one of 'mse', 'rescaled_mse', 'kl', 'rescaled_kl'"):
    losses.training_losses(s, x, x, x, t, x, mean_type="eps", var_type="fixed_small", loss_type="l2")


@pytest.mark.parametrize(
    "mean_type,var_type,match",
    [
        ("epsilon", "fixed_small", r"mean_type='epsilon' is not supported; use one of 'eps', 'x0', 'v'"),
        ("eps", "learnt", r"var_type='learnt' is not supported; use one of 'fixed_small', 'fixed_large', 'learned', 'learned_range'"),
    ],
)
def test_unknown_types_list_choices(mean_type, var_type, match):
  s, x, t = _args()
  with pytest.raises(ValueError, match=match):
    losses.training_losses(s, x, x, x, t, x, mean_type=mean_type, var_type=var_type, loss_type="mse")
  with pytest.raises(ValueError, match=match):
    losses.vb_terms_bpd(s, x, x, x, t, mean_type=mean_type, var_type=var_type)
  with pytest.raises(ValueError, match=match):
    losses.calc_bpd(lambda x_t, t, c: x_t, s, x, jax.random.key(0), mean_type=mean_type, var_type=var_type)
  if mean_type == "epsilon":
    with pytest.raises(ValueError, match=match):
      losses.min_snr_weight(s, t, 5.0, mean_type)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("mean_type", MEAN_TYPES)
def test_timestep_out_of_range(loss_type, mean_type):
  s, x, _ = _args()
  t = jnp.array([0, 100])
  with pytest.raises(ValueError, match=r"t holds timesteps in \[0, 100\] but the schedule has 100 steps"):
    losses.training_losses(s, x, x, x, t, x, mean_type=mean_type, var_type="fixed_small", loss_type=loss_type)


def test_timestep_out_of_range_elsewhere():
  s, x, _ = _args()
  t = jnp.array([-1, 3])
  match = r"t holds timesteps in \[-1, 3\]"
  with pytest.raises(ValueError, match=match):
    losses.vb_terms_bpd(s, x, x, x, t, mean_type="eps", var_type="fixed_small")
  with pytest.raises(ValueError, match=match):
    losses.snr(s, t)


def test_wrong_channel_count():
  s, x, t = _args()
  with pytest.raises(ValueError, match=r"var_type='learned_range' needs 6 channels"):
    losses.training_losses(s, x, x, x, t, x, mean_type="eps", var_type="learned_range", loss_type="rescaled_mse")
  with pytest.raises(ValueError, match=r"var_type='fixed_large' needs 3 channels"):
    losses.training_losses(s, jnp.zeros((2, 2, 2, 6)), x, x, t, x, mean_type="eps", var_type="fixed_large",
                           loss_type="kl")


def test_likelihood_shape_mismatch():
  with pytest.raises(ValueError, match="x, means, log_scales must share a shape"):
    losses.discretized_gaussian_log_likelihood(jnp.zeros((2, 3)), means=jnp.zeros((2, 3)), log_scales=jnp.zeros((3,)))


def test_decoder_likelihood_with_tiny_scales_stays_finite():
  # A learned log-variance of −80 (σ = e^−40) overflowed upper³ in float32; the bin
  # then holds all the mass (x at the mean) or none (x a bin away), exactly.
  x = jnp.array([[0.0, 0.5, 0.5, 1.0]])
  means = jnp.array([[0.0, 0.5, 0.5 + 2 / 255, 1.0]])
  log_scales = jnp.full_like(x, -40.0)
  logp = np.asarray(losses.discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales))
  assert np.all(np.isfinite(logp))
  np.testing.assert_allclose(logp[0, [0, 1, 3]], 0.0, atol=1e-6)
  np.testing.assert_allclose(logp[0, 2], np.log(1e-12), rtol=1e-6)
