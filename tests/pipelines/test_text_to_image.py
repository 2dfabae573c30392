"""Sampling a U-Net through the pipeline: the variance override on a learned-variance model, the lowest timestep."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from t2i_jax import config_keys
from t2i_jax.diffusion import samplers, schedules
from t2i_jax.models.unet import UNet
from t2i_jax.pipelines import stage as stage_lib, text_to_image
from tests.models.util import random_params


def _model_whose_variance_is_the_posteriors():
  # Improved DDPM's learned range interpolates log σ² between log β̃_t (v = -1) and log β_t (v = 1);
  # a zero variance kernel with bias -1 makes the learned variance exactly the fixed-small one.
  model = UNet(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(),
               learn_sigma=True)
  x, t = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, t)["params"]  # op by op, init is ~60 compiles
  key = jax.random.PRNGKey(1)
  params["out_conv"]["kernel"] = 0.1 * jax.random.normal(key, params["out_conv"]["kernel"].shape)
  params["out_conv"]["kernel"] = params["out_conv"]["kernel"].at[..., 3:].set(0.0)
  params["out_conv"]["bias"] = params["out_conv"]["bias"].at[3:].set(-1.0)
  return model, params


def test_ancestral_sampling_can_swap_a_learned_variance_for_a_fixed_one():
  model, params = _model_whose_variance_is_the_posteriors()
  diffusion = config_keys.section("diffusion", schedule="linear", num_timesteps=100, mean_type="eps",
                                  var_type="learned_range")
  def sample(var_type=None):
    settings = text_to_image.SampleSettings(method="ddpm", steps=5, seed=3, var_type=var_type)
    return np.asarray(text_to_image.sample_unet(model, params, diffusion, {}, 2, settings))
  learned, small, large = sample(), sample("fixed_small"), sample("fixed_large")
  assert learned.shape == (2, 8, 8, 3)
  np.testing.assert_allclose(learned, small, atol=1e-5)
  assert np.max(np.abs(large - small)) > 1e-2  # β_t is wider than β̃_t at every step but the last
  fixed = diffusion.copy_and_resolve_references()
  fixed.var_type = "fixed_small"
  with pytest.raises(ValueError, match="needs a model trained with learned variance"):
    text_to_image.sample_unet(model, params, fixed, {}, 2,
                              text_to_image.SampleSettings(method="ddpm", steps=5, var_type="learned_range"))


def _diffusion(num_timesteps=100):
  return ml_collections.ConfigDict(dict(schedule="cosine", num_timesteps=num_timesteps, mean_type="x0",
                                        var_type="fixed_small"))


def test_min_timestep_spreads_the_steps_over_the_upper_span():
  diffusion = _diffusion(1000)
  schedule, kept = text_to_image.respaced_schedule(diffusion, "dpm++2m", 20, min_timestep=150)
  kept = np.asarray(kept)
  assert kept.shape == (20,) and kept[0] == 150 and kept[-1] == 999
  np.testing.assert_array_equal(np.diff(kept) >= 44, True)  # 850 timesteps in 19 gaps of 44 or 45
  # The respaced process starts at ᾱ(150): its first step is the jump from t = 150 to the clean image.
  full = text_to_image.respaced_schedule(diffusion, "dpm++2m", 1000)[0]
  np.testing.assert_allclose(float(schedule.alphas_cumprod[0]), float(full.alphas_cumprod[150]), rtol=1e-6)
  # DDIM's integer stride applies to the span: 850 / 10 = 85.
  np.testing.assert_array_equal(np.asarray(text_to_image.respaced_schedule(diffusion, "ddim", 10, 150)[1]),
                                150 + 85 * np.arange(10))
  # min_timestep=0 is the plain respacing.
  np.testing.assert_array_equal(np.asarray(text_to_image.respaced_schedule(diffusion, "ddpm", 50, 0)[1]),
                                np.asarray(text_to_image.respaced_schedule(diffusion, "ddpm", 50)[1]))


@pytest.mark.parametrize("method", ["ddpm", "ddim", "dpm++2m", "heun"])
def test_min_timestep_never_asks_the_model_below_it(method):
  # A model that knows the data (one image, x0 = target) at t ≥ 30 and is wrong below: the samplers end
  # on its x0 prediction at their lowest timestep, so with min_timestep=30 they return the target exactly.
  diffusion = _diffusion()
  target = jnp.full((2, 4, 4, 3), 0.3)

  def denoise(x, t, cond):
    del cond
    return jnp.where((t >= 30)[:, None, None, None], target, -0.5) + 0.0 * x

  def sample(min_timestep):
    schedule, kept = text_to_image.respaced_schedule(diffusion, method, 10, min_timestep)
    return np.asarray(samplers.sample(denoise, schedule, target.shape, jax.random.PRNGKey(0), method=method,
                                      mean_type="x0", var_type="fixed_small", timestep_map=kept,
                                      num_steps=10 if method == "heun" else None))

  np.testing.assert_allclose(sample(30), 0.3, atol=1e-5)
  assert np.max(np.abs(sample(0) - 0.3)) > 0.1


def test_start_timestep_starts_from_the_initial_image_noised_to_it():
  # An eps model that predicts zero noise: DDIM (η = 0) then scales x_t by sqrt(ᾱ_prev / ᾱ_t) at each
  # step, so from x_start = sqrt(ᾱ_s)·x_init + sqrt(1 − ᾱ_s)·n it returns x_init + sqrt(1/ᾱ_s − 1)·n
  # exactly: the start is start_timestep's own ᾱ, and the init image is what it noises.
  model = UNet(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=())
  params = random_params(model, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32))["params"]
  params["out_conv"] = jax.tree.map(jnp.zeros_like, params["out_conv"])
  diffusion = config_keys.section("diffusion", schedule="linear", num_timesteps=100, mean_type="eps",
                                  var_type="fixed_small")
  x_init = 0.5 * jnp.sin(jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32)).reshape(2, 8, 8, 3)
  noise = jax.random.normal(jax.random.PRNGKey(2), x_init.shape)
  settings = text_to_image.SampleSettings(method="ddim", steps=5, start_timestep=50, threshold="none")
  out = text_to_image.sample_unet(model, params, diffusion, {}, 2, settings, x_T=noise, x_init=x_init)
  abar = np.cumprod(1.0 - schedules.beta_schedule("linear", 100))[50]
  np.testing.assert_allclose(np.asarray(out), x_init + np.sqrt(1.0 / abar - 1.0) * noise, atol=1e-4)
  _, kept = text_to_image.respaced_schedule(diffusion, "ddim", 5, start_timestep=50)
  assert int(kept[0]) == 0 and int(kept[-1]) == 50
  with pytest.raises(ValueError, match="starts from an initial image, and this stage has none"):
    text_to_image.sample_unet(model, params, diffusion, {}, 2, settings)
  with pytest.raises(ValueError, match="must lie below T = 100"):
    text_to_image.respaced_schedule(diffusion, "ddim", 5, start_timestep=100)
  with pytest.raises(ValueError, match="start_timestep=-1"):
    text_to_image.SampleSettings(start_timestep=-1)


def test_bad_min_timestep_is_refused():
  with pytest.raises(ValueError, match=r"must lie in \[0, 80\] for 20 steps"):
    text_to_image.respaced_schedule(_diffusion(), "ddim", 20, min_timestep=90)
  with pytest.raises(ValueError, match="must lie in"):
    text_to_image.respaced_schedule(_diffusion(), "ddim", 20, min_timestep=-1)
  with pytest.raises(ValueError, match="the Karras samplers \\(heun\\) start from noise"):
    text_to_image.respaced_schedule(_diffusion(), "heun", 20, start_timestep=10)


@pytest.mark.slow
def test_thresholds_bound_the_x0_predictions(trained_runlocal):
  """static clips every x0 prediction to [-1, 1], dynamic is Imagen's, none leaves them alone (latents); the
  settings refuse what they cannot do."""
  workdir, _ = trained_runlocal
  stage = stage_lib.load_stage(workdir)
  cond = stage.text_cond(["a large red circle"] * 2)
  base = dict(method="ddim", steps=3, guidance=8.0, seed=1)
  out = {name: np.asarray(text_to_image.sample_unet(
      stage.model, stage.params, stage.diffusion, cond, 2, text_to_image.SampleSettings(threshold=name, **base)))
      for name in ("static", "dynamic", "none")}
  assert np.abs(out["static"]).max() <= 1.0 and np.abs(out["dynamic"]).max() <= 1.0 + 1e-6
  assert np.abs(out["none"]).max() > 1.0  # w = 8 overshoots
  assert not np.allclose(out["static"], out["dynamic"])
  with pytest.raises(ValueError, match="threshold='soft' is not supported"):
    text_to_image.SampleSettings(threshold="soft")
  with pytest.raises(ValueError, match="percentile=0.2"):
    text_to_image.SampleSettings(threshold="dynamic", percentile=0.2)
