"""Sampling a U-Net through the pipeline: the variance override on a learned-variance model."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from t2i_jax.models.unet import UNet
from t2i_jax.pipelines import text_to_image


def _model_whose_variance_is_the_posteriors():
  # Improved DDPM's learned range interpolates log σ² between log β̃_t (v = -1) and log β_t (v = 1);
  # a zero variance kernel with bias -1 makes the learned variance exactly the fixed-small one.
  model = UNet(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(),
               learn_sigma=True)
  x, t = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), x, t)["params"]
  params = jax.tree.map(lambda a: a, params)
  key = jax.random.PRNGKey(1)
  params["out_conv"]["kernel"] = 0.1 * jax.random.normal(key, params["out_conv"]["kernel"].shape)
  params["out_conv"]["kernel"] = params["out_conv"]["kernel"].at[..., 3:].set(0.0)
  params["out_conv"]["bias"] = params["out_conv"]["bias"].at[3:].set(-1.0)
  return model, params


def test_ancestral_sampling_can_swap_a_learned_variance_for_a_fixed_one():
  model, params = _model_whose_variance_is_the_posteriors()
  diffusion = ml_collections.ConfigDict(dict(schedule="linear", num_timesteps=100, mean_type="eps",
                                             var_type="learned_range"))
  def sample(var_type=None):
    return np.asarray(text_to_image.sample_unet(model, params, diffusion, {}, 2, method="ddpm", steps=5, seed=3,
                                                var_type=var_type))
  learned, small, large = sample(), sample("fixed_small"), sample("fixed_large")
  assert learned.shape == (2, 8, 8, 3)
  np.testing.assert_allclose(learned, small, atol=1e-5)
  assert np.max(np.abs(large - small)) > 1e-2  # β_t is wider than β̃_t at every step but the last
  fixed = diffusion.copy_and_resolve_references()
  fixed.var_type = "fixed_small"
  with pytest.raises(ValueError, match="needs a model trained with learned variance"):
    text_to_image.sample_unet(model, params, fixed, {}, 2, method="ddpm", steps=5,
                              var_type="learned_range")
