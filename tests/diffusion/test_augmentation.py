"""Noise-conditioning augmentation: the documented moments, the level range, the blur."""

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.diffusion import augmentation, schedules

SCHEDULE = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))


def test_noise_augment_has_mean_sqrt_alphabar_x_and_variance_one_minus_alphabar():
  x = jnp.linspace(-1.0, 1.0, 8 * 8 * 3).reshape(1, 8, 8, 3)
  levels = jnp.array([0, 100, 300, 900], jnp.int32)
  draws = 4000
  noise = jax.random.normal(jax.random.PRNGKey(0), (draws, 4, 8, 8, 3))
  out = jax.vmap(lambda n: augmentation.noise_augment(SCHEDULE, jnp.broadcast_to(x, (4, 8, 8, 3)), levels, n))(noise)
  alphabar = np.asarray(SCHEDULE.alphas_cumprod)[np.asarray(levels)]
  mean, var = np.asarray(out.mean(0)), np.asarray(out.var(0))
  for i, a in enumerate(alphabar):
    # Standard error of the mean: sqrt((1 - a) / draws) <= 0.016.
    np.testing.assert_allclose(mean[i], np.sqrt(a) * np.asarray(x[0]), atol=0.07)
    np.testing.assert_allclose(var[i].mean(), 1 - a, rtol=0.03, atol=1e-4)
  assert var[0].mean() < 1e-3 < 0.02 < var[1].mean() < var[2].mean() < var[3].mean()


def test_levels_are_uniform_over_zero_to_max():
  levels = np.asarray(augmentation.sample_levels(jax.random.PRNGKey(1), 20_000, 300))
  assert levels.dtype == np.int32 and levels.min() == 0 and levels.max() == 300
  counts = np.bincount(levels // 50, minlength=7)[:6]  # bins of 50 levels: [0, 50) … [250, 300)
  np.testing.assert_allclose(counts / 20_000, 50 / 301, atol=0.012)


def test_blur_keeps_constants_and_the_mean_and_sigma_zero_is_the_identity():
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 12, 12, 3))
  np.testing.assert_allclose(augmentation.gaussian_blur(x, jnp.zeros(3)), x, atol=1e-6)
  flat = jnp.full((2, 8, 8, 3), 0.3)
  np.testing.assert_allclose(augmentation.gaussian_blur(flat, jnp.array([0.5, 2.0])), flat, atol=1e-6)
  blurred = augmentation.gaussian_blur(x, jnp.full(3, 1.0))
  # Blur lowers the variance of white noise; with replicated edges the mean stays near the input's.
  assert float(blurred.var()) < 0.5 * float(x.var())
  np.testing.assert_allclose(float(blurred.mean()), float(x.mean()), atol=0.05)
  kernel = np.asarray(augmentation.gaussian_kernel(jnp.array([1.0]), 2))[0]
  np.testing.assert_allclose(kernel, np.exp(-0.5 * np.arange(-2, 3) ** 2) / np.exp(-0.5 * np.arange(-2, 3) ** 2).sum(),
                             rtol=1e-6)


def test_training_augmentation_returns_levels_in_range_and_noised_inputs():
  x = jnp.zeros((64, 4, 4, 3))
  out, levels = augmentation.augment_low_res(SCHEDULE, x, jax.random.PRNGKey(3), max_level=250, blur_sigma_max=1.0)
  levels = np.asarray(levels)
  assert out.shape == x.shape and levels.min() >= 0 and levels.max() <= 250
  # Zero input: the output is pure noise of std sqrt(1 - ᾱ_level), per example.
  expected = np.sqrt(1 - np.asarray(SCHEDULE.alphas_cumprod)[levels])
  np.testing.assert_allclose(np.asarray(out).reshape(64, -1).std(1), expected, rtol=0.45, atol=0.01)
