"""EDM's design space: coefficients, the VP/v changes of variables, the Karras grid and sampler, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import edm, gaussian, schedules

SIGMAS = np.array([0.002, 0.05, 0.5, 1.0, 3.0, 80.0], np.float32)


def _network(x, label, cond=None):
  """A fixed nonlinear F(x_in; label) that reads its label, [B, H, W, C] -> same."""
  w = jnp.array([[0.7, -0.2], [0.3, 0.9]], jnp.float32)
  return jnp.tanh(x @ w + 0.01 * jnp.asarray(label, jnp.float32)[:, None, None, None])


def test_coefficients_equal_table_one():
  sd = 0.5
  got = edm.coefficients(edm.Design("edm", sigma_data=sd), SIGMAS)
  s = SIGMAS.astype(np.float64)
  want = (sd**2 / (s**2 + sd**2), s * sd / np.sqrt(s**2 + sd**2), 1 / np.sqrt(s**2 + sd**2), np.log(s) / 4)
  np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-5)
  c_skip, c_out, c_in, c_noise = edm.coefficients(edm.Design("ve"), SIGMAS)
  np.testing.assert_allclose(np.stack([c_skip, c_out, c_in, c_noise]),
                             np.stack([np.ones_like(s), s, np.ones_like(s), np.log(s / 2)]), rtol=1e-5)
  c_skip, c_out, c_in, c_noise = edm.coefficients(edm.Design("vp"), SIGMAS)
  t = (np.sqrt(0.1**2 + 2 * 19.9 * np.log1p(s**2)) - 0.1) / 19.9
  np.testing.assert_allclose(np.stack([c_skip, c_out, c_in, c_noise]),
                             np.stack([np.ones_like(s), -s, 1 / np.sqrt(1 + s**2), 999 * t]), rtol=1e-4)
  np.testing.assert_allclose(edm.loss_weight(edm.Design("edm", sigma_data=sd), SIGMAS),
                             (s**2 + sd**2) / (s * sd) ** 2, rtol=1e-5)
  np.testing.assert_allclose(edm.loss_weight(edm.Design("vp"), SIGMAS), 1 / s**2, rtol=1e-5)


def test_vp_sigma_is_song_vp_sde_and_inverts():
  t = np.linspace(1e-3, 1.0, 50)
  abar = np.exp(-0.5 * 19.9 * t**2 - 0.1 * t)  # the VP SDE's ᾱ(t)
  np.testing.assert_allclose(edm.vp_sigma(t), np.sqrt((1 - abar) / abar), rtol=1e-4)
  np.testing.assert_allclose(edm.vp_sigma_inv(edm.vp_sigma(t)), t, rtol=1e-4)


@pytest.mark.parametrize("mean_type", ["eps", "v"])
def test_vp_and_v_preconditioning_equal_ddpm_x0_prediction(mean_type):
  """D(x; σ) under "vp" (eps) and under "edm" with σ_d = 1 and F negated (v) equals the DDPM model's x0 prediction
  at x_VP = x/√(1 + σ²) and the timestep of that σ, for the same network reading the same label."""
  s = schedules.make_schedule(schedules.beta_schedule("linear", 1000))
  t = jnp.array([3, 100, 500, 900], jnp.int32)
  sigma = (s.sqrt_one_minus_alphas_cumprod / s.sqrt_alphas_cumprod)[t]
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * jnp.sqrt(1 + sigma**2)[:, None, None, None] * 0.8
  x_vp = x / jnp.sqrt(1 + sigma**2)[:, None, None, None]
  want = gaussian.p_mean_variance(s, _network(x_vp, t), x_vp, t, mean_type=mean_type, var_type="fixed_small",
                                  clip_denoised=False)["pred_x0"]
  if mean_type == "eps":
    design, network = edm.Design("vp"), lambda x_in, c_noise, cond: _network(x_in, t)
  else:
    design, network = edm.Design("edm", sigma_data=1.0), lambda x_in, c_noise, cond: -_network(x_in, t)
  np.testing.assert_allclose(edm.denoise(network, design, x, sigma), want, rtol=2e-4, atol=2e-5)
  # The change of variables that runs a DDPM model with the Karras sampler gives the same.
  predict = lambda xv, tt: gaussian.p_mean_variance(  # noqa: E731
      s, _network(xv, tt), xv, tt, mean_type=mean_type, var_type="fixed_small", clip_denoised=False)["pred_x0"]
  sigma_all = s.sqrt_one_minus_alphas_cumprod / s.sqrt_alphas_cumprod
  for i in range(4):
    got = edm.ddpm_denoiser(predict, sigma_all)(x[i:i + 1], sigma[i])
    np.testing.assert_allclose(got, want[i:i + 1], rtol=2e-4, atol=2e-5)


def test_karras_time_steps_match_formula():
  n, lo, hi, rho = 18, 0.002, 80.0, 7.0
  want = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)] + [0.0]
  got = edm.karras_sigmas(n, lo, hi)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert got[0] == pytest.approx(80.0) and got[-2] == pytest.approx(0.002) and got[-1] == 0


def _gaussian_denoiser(mu, std):
  """The exact D(x; σ) = E[x0 | x0 + σn = x] for x0 ~ N(mu, std²)."""
  return lambda x, sigma: mu + std**2 / (std**2 + sigma**2) * (x - mu)


def _sample_gaussian(method, steps, churn=edm.Churn(), key=1, n=20000):
  """(samples [n, 1], what exact transport of the same starting draws gives) for x0 ~ N(0.3, 0.5²)."""
  mu, std, sigma_max = 0.3, 0.5, 80.0
  sigmas = edm.karras_sigmas(steps, 0.002, sigma_max)
  x_start = mu + jnp.sqrt(std**2 + sigma_max**2) * jax.random.normal(jax.random.PRNGKey(0), (n, 1))
  run = jax.jit(lambda x, k: edm.sample(_gaussian_denoiser(mu, std), x, sigmas, k, method=method, churn=churn))
  exact = mu + (x_start - mu) * std / math.sqrt(std**2 + sigma_max**2)  # the probability-flow ODE's solution
  return np.asarray(run(x_start, jax.random.PRNGKey(key))), np.asarray(exact)


def test_heun_on_a_gaussian_reaches_the_data_distribution():
  """With the exact denoiser of N(0.3, 0.5²), the samples' mean and standard deviation against the exact ODE
  solution from the same draws. Tolerances as measured: 18 Heun steps (35 evaluations) leave the deviation 5.5%
  wide, because a 1-D Gaussian of std 0.5 has all its curvature at σ ≈ 0.5, where the ρ = 7 grid moves σ by
  ~2/3 per step; 18 Euler steps leave it 15% narrow (EDM's claim that Heun needs fewer steps, in closed form);
  50 Heun steps 0.6%."""
  def errors(samples, exact):
    return abs(samples.mean() - exact.mean()), abs(samples.std() / exact.std() - 1)

  heun = errors(*_sample_gaussian("heun", 18))
  euler = errors(*_sample_gaussian("euler", 18))
  assert heun[0] < 0.005 and heun[1] < 0.06
  assert euler[1] > 2.5 * heun[1]
  assert errors(*_sample_gaussian("heun", 50))[1] < 0.01
  assert errors(*_sample_gaussian("dpm++2m", 50))[1] < 0.015
  # Churn keeps the marginals (fresh noise, then the denoiser removes it; measured: std 3.3% wide at 50 steps,
  # the mean 1.9 standard errors off); 40 as in EDM's ImageNet sampler.
  churned, exact = _sample_gaussian("heun", 50, edm.Churn(40.0, 0.05, 50.0, 1.0))
  assert abs(churned.mean() - 0.3) < 0.015 and abs(churned.std() / 0.5 - 1) < 0.05
  assert np.abs(churned - exact).max() > 0.1  # and is not the deterministic path


def test_heun_without_churn_is_deterministic_and_churn_is_not():
  a, b = _sample_gaussian("heun", 6, key=1, n=64)[0], _sample_gaussian("heun", 6, key=2, n=64)[0]
  np.testing.assert_array_equal(a, b)
  churn = edm.Churn(10.0)
  c, d = _sample_gaussian("heun", 6, churn, key=1, n=64)[0], _sample_gaussian("heun", 6, churn, key=2, n=64)[0]
  assert np.abs(c - d).max() > 1e-3
  np.testing.assert_array_equal(c, _sample_gaussian("heun", 6, churn, key=1, n=64)[0])
  # Steps outside [S_min, S_max] add no noise, exactly (a NaN once came from √(σ̂² − σ²) rounding below 0).
  ranged = _sample_gaussian("heun", 10, edm.Churn(1.0, 0.05, 50.0, 1.003), n=64)[0]
  assert np.isfinite(ranged).all()


def test_training_sigmas_follow_each_column():
  key = jax.random.PRNGKey(0)
  log_sigma = np.log(edm.training_sigmas(edm.Design("edm"), key, 20000))
  assert abs(log_sigma.mean() + 1.2) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03
  ve = np.asarray(edm.training_sigmas(edm.Design("ve", sigma_min=0.02, sigma_max=100.0), key, 20000))
  assert ve.min() >= 0.02 and ve.max() <= 100.0
  assert abs(np.log(ve).mean() - 0.5 * (math.log(0.02) + math.log(100.0))) < 0.05
  vp = np.asarray(edm.training_sigmas(edm.Design("vp"), key, 20000))
  assert vp.max() <= float(edm.vp_sigma(1.0)) * 1.0001 and vp.min() >= float(edm.vp_sigma(1e-5)) * 0.999


def test_bad_designs_and_churn_are_refused():
  with pytest.raises(ValueError, match="preconditioning='eps2'.*'edm', 'vp', 've'"):
    edm.Design("eps2")
  with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
    edm.Design(sigma_min=80.0, sigma_max=0.002)
  with pytest.raises(ValueError, match="S_churn must be a finite number ≥ 0"):
    edm.Churn(-1.0)
  with pytest.raises(ValueError, match="0 ≤ S_min ≤ S_max"):
    edm.Churn(10.0, s_min=50.0, s_max=0.05)
  with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
    edm.karras_sigmas(10, 1.0, 1.0)
  with pytest.raises(ValueError, match="use euler or heun with churn"):
    edm.sample(lambda x, s: x, jnp.zeros((1, 1)), edm.karras_sigmas(4, 0.1, 1.0), jax.random.PRNGKey(0),
               method="dpm++2m", churn=edm.Churn(5.0))
