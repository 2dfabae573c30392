"""Samplers against a Gaussian toy dataset whose exact denoiser is known in closed form.

For data x0 ~ N(μ, σ_d²) per pixel, x_t ~ N(aμ, a²σ_d² + b²) with a = sqrt(ᾱ_t),
b = sqrt(1 − ᾱ_t), and the exact eps-model is E[eps | x_t] = b·(x_t − aμ)/(a²σ_d² + b²).
Every deterministic sampler is then affine in x_T, so its output distribution is
exactly N(f(0), (f(1) − f(0))²): no Monte Carlo error in those checks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import schedules, samplers

MU, SD = 0.3, 0.5
T = 1000


def exact_eps_model(schedule, mu=MU, sd=SD):
  def denoise_fn(x_t, t, cond):
    del cond
    a = schedule.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    b = schedule.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return b * (x_t - a * mu) / (a * a * sd * sd + b * b)

  return denoise_fn


def affine_moments(method, s, timestep_map=None, num_steps=None, schedule_name="cosine", mu=MU, sd=SD):
  """(mean, variance) of a deterministic sampler's output for x_T ~ N(0, 1)."""
  full = schedules.make_schedule(schedules.beta_schedule(schedule_name, T))
  x_T = jnp.array([0.0, 1.0]).reshape(2, 1, 1, 1)
  out = samplers.sample(
      exact_eps_model(full, mu, sd), s, (2, 1, 1, 1), jax.random.PRNGKey(0), method=method,
      mean_type="eps", var_type="fixed_small", timestep_map=timestep_map, clip_denoised=False,
      num_steps=num_steps, x_T=x_T,
  )
  out = np.asarray(out).ravel()
  return out[0], (out[1] - out[0]) ** 2


def closed_form_ddim_moments(betas, kept, mu, sd):
  """DDIM (η = 0) with the exact model composed step by step in float64 numpy."""
  abar = np.cumprod(1.0 - betas)[kept]
  abar_prev = np.append(1.0, abar[:-1])
  gain, offset = 1.0, 0.0  # x = gain·x_T + offset
  for a2, p2 in zip(abar[::-1], abar_prev[::-1]):
    a, b = np.sqrt(a2), np.sqrt(1.0 - a2)
    denom = a2 * sd**2 + 1.0 - a2
    e1, e0 = b / denom, -b * a * mu / denom  # eps = e1·x + e0
    k1, k0 = (1.0 - b * e1) / a, -b * e0 / a  # x0 = (x − b·eps)/a
    step_gain = np.sqrt(p2) * k1 + np.sqrt(1.0 - p2) * e1
    step_offset = np.sqrt(p2) * k0 + np.sqrt(1.0 - p2) * e0
    gain, offset = step_gain * gain, step_gain * offset + step_offset
  return offset, gain**2


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def test_ddim_equals_closed_form_composition(x64):
  betas = schedules.beta_schedule("cosine", T)
  kept = schedules.space_timesteps(T, "ddim50")
  s, tmap = schedules.respace(betas, kept)
  mean, var = affine_moments("ddim", s, tmap)
  want_mean, want_var = closed_form_ddim_moments(betas, kept, MU, SD)
  np.testing.assert_allclose([mean, var], [want_mean, want_var], rtol=1e-9)


def test_ancestral_1000_steps_matches_data():
  full = schedules.make_schedule(schedules.beta_schedule("cosine", T))
  # 1000 steps over 65k pixels, each drawing its noise: running, not compiling, is this test's time, and LLVM
  # level 1 (the suite compiles at 0, tests/conftest.py) runs it in a third of the time, to the same numbers.
  x = jax.jit(lambda: samplers.sample(
      exact_eps_model(full), full, (4096, 4, 4, 1), jax.random.PRNGKey(1), method="ddpm",
      mean_type="eps", var_type="fixed_small", clip_denoised=False,
  ), compiler_options={"xla_backend_optimization_level": 1})()
  x = np.asarray(x, np.float64)
  # 65k draws: the standard error of the variance is 0.55%, of the mean 0.7%.
  assert abs(x.mean() / MU - 1) < 0.02
  assert abs(x.var() / SD**2 - 1) < 0.02


def test_ddim_moments(x64):
  """DDIM (η = 0) is first order: on this toy it contracts each step, so 50 steps
  miss the variance by ~6% (on N(0, 1) data no spacing can do better than
  1 − exp(−(π/2)²/50) = 4.8%); 250 steps are within 2%."""
  betas = schedules.beta_schedule("cosine", T)
  for spacing, var_tol in (("ddim50", 0.065), ("ddim250", 0.02)):
    s, tmap = schedules.respace(betas, schedules.space_timesteps(T, spacing))
    mean, var = affine_moments("ddim", s, tmap)
    assert abs(mean / MU - 1) < 0.02, spacing
    assert abs(var / SD**2 - 1) < var_tol, spacing


def test_dpm_solver_pp_20_steps(x64):
  betas = schedules.beta_schedule("linear", T)
  errors = {}
  for steps in (20, 40):
    s, tmap = schedules.respace(betas, schedules.logsnr_timesteps(betas, steps))
    mean, var = affine_moments("dpm++2m", s, tmap, schedule_name="linear")
    assert abs(mean / MU - 1) < 0.02
    errors[steps] = abs(var / SD**2 - 1)
  assert errors[20] < 0.035
  assert errors[40] < errors[20] / 3.0  # second order: 2× the steps, ~4× less error


def test_dpm_solver_pp_20_steps_within_2_percent(x64):
  """On the cosine schedule with 20 evenly spaced steps that stop at t = 50 and then
  jump to σ = 0 (the grid diffusers calls "linspace"), DPM-Solver++(2M) lands within
  2% of the data's mean and variance (measured: −0.77% variance). diffusers'
  DPMSolverMultistepScheduler gives the same numbers on the same grids."""
  betas = schedules.beta_schedule("cosine", T)
  kept = np.round(np.linspace(0, T - 1, 21)).astype(int)[1:]
  s, tmap = schedules.respace(betas, kept)
  mean, var = affine_moments("dpm++2m", s, tmap)
  assert abs(mean / MU - 1) < 0.02
  assert abs(var / SD**2 - 1) < 0.02


def test_dpm_solver_pp_beats_ddim_at_equal_steps(x64):
  betas = schedules.beta_schedule("linear", T)
  s, tmap = schedules.respace(betas, schedules.logsnr_timesteps(betas, 20))
  _, var_dpm = affine_moments("dpm++2m", s, tmap, schedule_name="linear")
  _, var_ddim = affine_moments("ddim", s, tmap, schedule_name="linear")
  assert abs(var_dpm / SD**2 - 1) * 3 < abs(var_ddim / SD**2 - 1)


def test_karras_euler_first_order_heun_second_order(x64):
  # On N(0, 1) data the probability-flow ODE leaves x_VP unchanged: exactly, x0 = x_T.
  full = schedules.make_schedule(schedules.beta_schedule("linear", T))
  err = {}
  for method in ("euler", "heun"):
    for n in (40, 80):
      _, var = affine_moments(method, full, num_steps=n, schedule_name="linear", mu=0.0, sd=1.0)
      err[method, n] = abs(var - 1.0)
  assert 1.8 < err["euler", 40] / err["euler", 80] < 2.2
  assert err["heun", 40] / err["heun", 80] > 3.5
  assert err["heun", 80] < 0.005


def test_karras_sigmas_snap_to_schedule():
  full = schedules.make_schedule(schedules.beta_schedule("linear", T))
  sigmas, ts = samplers.karras_sigmas(full, 10)
  abar = np.cumprod(1 - schedules.beta_schedule("linear", T))  # float64
  sigma_all = np.sqrt((1 - abar) / abar)
  assert sigmas.shape == (11,) and sigmas[-1] == 0
  np.testing.assert_allclose(np.asarray(sigmas[:-1]), sigma_all[np.asarray(ts)], rtol=1e-6)
  # The grid starts at σ = 80, as EDM samples (the linear schedule's last σ is 157).
  assert sigma_all[-1] > 150 and ts[0] == np.argmin(np.abs(np.log(sigma_all / 80.0))) and ts[-1] == 0
  assert np.all(np.diff(np.asarray(sigmas)) < 0)
  # The cosine schedule's last σ is 2·10⁴: capped, the 10-step grid snaps to 10 distinct timesteps.
  cosine = schedules.make_schedule(schedules.beta_schedule("cosine", T))
  assert len(set(np.asarray(samplers.karras_sigmas(cosine, 10)[1]).tolist())) == 10


@pytest.mark.parametrize("schedule_name, x64", [("linear", False), ("cosine", False), ("cosine", True)])
def test_ddim_inversion_round_trip(schedule_name, x64):
  """Image state -> ddim_invert -> x_T -> DDIM back: the same image within 1e-4.

  With the exact denoiser of a one-point dataset the x0 prediction is constant
  along the path, so DDIM is exact: x_T must be the analytic a_T·x0 + b_T·eps of
  the eps that the state at index 0 carries.
  """
  with jax.enable_x64(x64):
    betas = schedules.beta_schedule(schedule_name, T)
    s, tmap = schedules.respace(betas, schedules.space_timesteps(T, "ddim50"))
    full = schedules.make_schedule(betas)
    dtype = s.betas.dtype
    point = jnp.linspace(-0.8, 0.8, 4 * 4 * 3, dtype=dtype).reshape(1, 4, 4, 3)

    def point_mass_eps(x_t, t, cond):
      a = full.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
      return (x_t - a * point) / full.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1)

    eps = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 3), dtype)
    x_img = full.sqrt_alphas_cumprod[0] * point + full.sqrt_one_minus_alphas_cumprod[0] * eps
    kw = dict(mean_type="eps", var_type="fixed_small", clip_denoised=False)
    x_T = samplers.ddim_invert(point_mass_eps, s, x_img, timestep_map=tmap, **kw)
    last = int(tmap[-1])
    want_T = full.sqrt_alphas_cumprod[last] * point + full.sqrt_one_minus_alphas_cumprod[last] * eps
    # Recovering eps from the state at t = 0 divides rounding by sqrt(1 − ᾱ_0) (0.01 for
    # linear, 0.006 for cosine), so float32 meets x_T to ~1e-4 and float64 to ~1e-12.
    np.testing.assert_allclose(np.asarray(x_T), np.asarray(want_T), atol=1e-9 if x64 else 5e-4)
    x = x_T
    for i in range(s.num_timesteps - 1, 0, -1):  # back down to the state at index 0
      t = jnp.full((2,), i, jnp.int32)
      x, _ = samplers.ddim_step(s, point_mass_eps(x, tmap[t], None), x, t, None, eta=0.0, **kw)
    np.testing.assert_allclose(np.asarray(x), np.asarray(x_img), atol=1e-9 if x64 else 1e-4)


def test_ddim_inversion_error_shrinks_with_steps():
  """For a non-degenerate model the round trip is exact only to O(step size)."""
  betas = schedules.beta_schedule("cosine", T)
  full = schedules.make_schedule(betas)
  model = exact_eps_model(full)
  x_T = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 3))
  errors = []

  @jax.jit  # one program per schedule: op by op, the 248 steps dispatch some 10,000 ops
  def step(s, tmap, x, i):
    t = jnp.full((2,), i, jnp.int32)
    return samplers.ddim_step(s, model(x, tmap[t], None), x, t, None, eta=0.0, mean_type="eps",
                              var_type="fixed_small", clip_denoised=False)[0]

  for spacing in ("ddim50", "ddim200"):
    s, tmap = schedules.respace(betas, schedules.space_timesteps(T, spacing))
    x = x_T
    for i in range(s.num_timesteps - 1, 0, -1):
      x = step(s, tmap, x, i)
    x_back = samplers.ddim_invert(model, s, x, timestep_map=tmap, mean_type="eps", var_type="fixed_small")
    errors.append(float(jnp.max(jnp.abs(x_back - x_T))))
  assert errors[1] < errors[0] / 3.0


def test_sample_is_deterministic_per_key_and_scan_matches_steps():
  betas = schedules.beta_schedule("linear", T)
  s, tmap = schedules.respace(betas, schedules.space_timesteps(T, "10"))
  model = exact_eps_model(schedules.make_schedule(betas))
  kw = dict(method="ddpm", mean_type="eps", var_type="fixed_small", timestep_map=tmap)
  key = jax.random.PRNGKey(7)
  a = samplers.sample(model, s, (3, 4, 4, 1), key, **kw)
  b = samplers.sample(model, s, (3, 4, 4, 1), key, **kw)
  c = samplers.sample(model, s, (3, 4, 4, 1), jax.random.PRNGKey(8), **kw)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(jnp.max(jnp.abs(a - c))) > 0.1

  # The scan equals a Python loop of ddpm_step with the same keys.
  init_key, loop_key = jax.random.split(key)
  x = jax.random.normal(init_key, (3, 4, 4, 1))
  for i in range(s.num_timesteps - 1, -1, -1):
    t = jnp.full((3,), i, jnp.int32)
    step_key, _ = jax.random.split(jax.random.fold_in(loop_key, i))
    noise = jax.random.normal(step_key, x.shape)
    x, _ = samplers.ddpm_step(s, model(x, tmap[t], None), x, t, noise, mean_type="eps", var_type="fixed_small")
  np.testing.assert_allclose(np.asarray(a), np.asarray(x), atol=1e-5)


def test_return_x0_and_learned_variance_outputs():
  betas = schedules.beta_schedule("cosine", 100)
  s = schedules.make_schedule(betas)
  eps_model = exact_eps_model(s)

  def learned(x_t, t, cond):  # variance channels at the middle of learned_range
    return jnp.concatenate([eps_model(x_t, t, cond), jnp.zeros_like(x_t)], axis=-1)

  for method in samplers.METHODS:
    x, x0s = samplers.sample(learned, s, (2, 4, 4, 3), jax.random.PRNGKey(0), method=method, mean_type="eps",
                             var_type="learned_range", return_x0=True, num_steps=10)
    assert x.shape == (2, 4, 4, 3)
    steps = 10 if method in ("euler", "heun") else 100
    assert x0s.shape == (steps, 2, 4, 4, 3), method
    assert np.all(np.isfinite(np.asarray(x)))
    # The last x0 prediction is the sample itself for every deterministic final step.
    if method != "ddpm":
      np.testing.assert_allclose(np.asarray(x0s[-1]), np.asarray(x), atol=1e-5)


def test_reverse_step_inverts_forward_step_with_fixed_eps():
  # One DDIM step down and one reverse step up with the same eps land where they started.
  s = schedules.make_schedule(schedules.beta_schedule("cosine", T))
  key1, key2 = jax.random.split(jax.random.PRNGKey(4))
  x0 = jax.random.uniform(key1, (2, 4, 4, 3), minval=-0.9, maxval=0.9)
  eps = jax.random.normal(key2, x0.shape)
  t = jnp.array([500, 500])
  from t2i_jax.diffusion import gaussian
  x_t = gaussian.q_sample(s, x0, t, eps)
  x_prev, _ = samplers.ddim_step(s, eps, x_t, t, None, eta=0.0, mean_type="eps", var_type="fixed_small",
                                 clip_denoised=False)
  want_prev = gaussian.q_sample(s, x0, t - 1, eps)
  np.testing.assert_allclose(np.asarray(x_prev), np.asarray(want_prev), atol=1e-5)
  x_up, _ = samplers.ddim_reverse_step(s, eps, x_prev, t - 1, mean_type="eps", var_type="fixed_small",
                                       clip_denoised=False)
  np.testing.assert_allclose(np.asarray(x_up), np.asarray(x_t), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="plms"), "method"),
        (dict(mean_type="score"), "mean_type"),
        (dict(var_type="learned_small"), "var_type"),
        (dict(method="heun", num_steps=1), "num_steps"),
    ],
)
def test_sample_bad_arguments(kwargs, match):
  s = schedules.make_schedule(schedules.beta_schedule("linear", 100))
  args = dict(method="ddim", mean_type="eps", var_type="fixed_small")
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    samplers.sample(lambda x, t, c: x, s, (1, 2, 2, 1), jax.random.PRNGKey(0), **args)


def test_wrong_output_channels_raise():
  s = schedules.make_schedule(schedules.beta_schedule("linear", 100))
  x = jnp.zeros((1, 2, 2, 3))
  with pytest.raises(ValueError, match="6 channels"):
    samplers.ddpm_step(s, x, x, jnp.array([3]), x, mean_type="eps", var_type="learned_range")
  with pytest.raises(ValueError, match="timesteps in"):
    samplers.ddpm_step(s, x, x, jnp.array([100]), x, mean_type="eps", var_type="fixed_small")


def test_zero_terminal_snr_with_v_prediction():
  """On a zero-terminal-SNR schedule x_T carries no signal; v-prediction still samples."""
  betas = schedules.rescale_zero_terminal_snr(schedules.beta_schedule("scaled_linear", T))
  full = schedules.make_schedule(betas)

  def v_model(x_t, t, cond):  # v = a·E[eps|x_t] − b·E[x0|x_t], finite at a = 0
    a = full.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    b = full.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    var = a * a * SD * SD + b * b
    eps = b * (x_t - a * MU) / var
    x0 = MU + a * SD * SD * (x_t - a * MU) / var
    return a * eps - b * x0

  s, tmap = schedules.respace(betas, schedules.space_timesteps(T, "ddim50"))
  for method in ("ddim", "dpm++2m", "ddpm"):
    x = samplers.sample(v_model, s, (2048, 2, 2, 1), jax.random.PRNGKey(5), method=method, mean_type="v",
                        var_type="fixed_small", timestep_map=tmap, clip_denoised=False)
    assert np.all(np.isfinite(np.asarray(x))), method
    assert abs(float(x.mean()) / MU - 1) < 0.05, method
  with pytest.raises(ValueError, match="zero-terminal-SNR"):
    samplers.sample(v_model, full, (1, 2, 2, 1), jax.random.PRNGKey(0), method="heun", mean_type="v",
                    var_type="fixed_small")
