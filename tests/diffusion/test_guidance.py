"""Classifier-free and classifier guidance, dynamic thresholding and inpainting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from t2i_jax.diffusion import gaussian, guidance, samplers, schedules


def _linear_model(params, x_t, t, cond):
  """A toy conditional model: mean channels x·w + label, variance channels label/10."""
  label = cond["label"].astype(x_t.dtype).reshape(-1, 1, 1, 1)
  mean = x_t * params["w"] + label + 0.01 * t.reshape(-1, 1, 1, 1)
  return jnp.concatenate([mean, jnp.broadcast_to(label / 10.0, x_t.shape)], axis=-1)


def test_classifier_free_guidance_formula():
  calls = []

  def model(x_t, t, cond):
    calls.append(x_t.shape[0])
    return _linear_model({"w": 0.5}, x_t, t, cond)

  x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 2))
  t = jnp.array([5, 6, 7])
  cond = {"label": jnp.array([1, 2, 3])}
  null = {"label": jnp.array([0])}  # batch 1 broadcasts to B
  guided = guidance.classifier_free(model, 4.0, null)(x, t, cond)
  assert calls == [6]  # one call on the [cond; null] batch
  out_c = _linear_model({"w": 0.5}, x, t, cond)
  out_u = _linear_model({"w": 0.5}, x, t, {"label": jnp.zeros(3, jnp.int32)})
  want_mean = out_u[..., :2] + 4.0 * (out_c[..., :2] - out_u[..., :2])
  np.testing.assert_allclose(np.asarray(guided[..., :2]), np.asarray(want_mean), rtol=1e-6)
  # Variance channels: the conditional half's, untouched by guidance.
  np.testing.assert_allclose(np.asarray(guided[..., 2:]), np.asarray(out_c[..., 2:]))
  # Scale 1 is the conditional model.
  np.testing.assert_allclose(np.asarray(guidance.classifier_free(model, 1.0, null)(x, t, cond)), np.asarray(out_c),
                             rtol=1e-6)


def test_conditions_the_null_leaves_out_go_to_both_halves():
  seen = {}

  def model(x_t, t, cond):
    seen.update(cond)
    return x_t * cond["label"][:, None, None, None] + cond["image"]

  x = jnp.ones((2, 2, 2, 1))
  cond = {"label": jnp.array([2.0, 3.0]), "image": jnp.array([10.0, 20.0])[:, None, None, None] * jnp.ones_like(x)}
  guided = guidance.classifier_free(model, 2.0, {"label": jnp.zeros(1)})(x, jnp.array([1, 1]), cond)
  np.testing.assert_array_equal(np.asarray(seen["image"][:, 0, 0, 0]), [10.0, 20.0, 10.0, 20.0])
  np.testing.assert_array_equal(np.asarray(seen["label"]), [2.0, 3.0, 0.0, 0.0])
  # uncond = image, cond = label + image: guided = image + 2·label.
  np.testing.assert_allclose(np.asarray(guided[:, 0, 0, 0]), [14.0, 26.0])


def test_guidance_rescale_restores_conditional_std():
  model = Partial(_linear_model, {"w": 2.0})
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 1))
  t = jnp.array([1, 2])
  cond, null = {"label": jnp.array([3, -2])}, {"label": jnp.array([0])}
  full = guidance.classifier_free(model, 7.0, null, rescale=1.0)(x, t, cond)[..., :1]
  plain = guidance.classifier_free(model, 7.0, null, rescale=0.0)(x, t, cond)[..., :1]
  half = guidance.classifier_free(model, 7.0, null, rescale=0.5)(x, t, cond)[..., :1]
  out_c = model(x, t, cond)[..., :1]
  np.testing.assert_allclose(np.std(np.asarray(full), axis=(1, 2, 3)), np.std(np.asarray(out_c), axis=(1, 2, 3)),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(half), 0.5 * np.asarray(full) + 0.5 * np.asarray(plain), rtol=1e-5, atol=1e-6)


def test_guidance_scale_is_data_not_a_recompile():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 20))
  model = Partial(_linear_model, {"w": jnp.float32(0.1)})
  null = {"label": jnp.array([0])}
  cond = {"label": jnp.array([1, 2])}
  kw = dict(method="ddim", mean_type="eps", var_type="learned_range", cond=cond)
  a = samplers.sample(guidance.classifier_free(model, 1.0, null), s, (2, 2, 2, 1), jax.random.PRNGKey(0), **kw)
  size = samplers._sample_jit._cache_size()
  b = samplers.sample(guidance.classifier_free(model, 3.0, null), s, (2, 2, 2, 1), jax.random.PRNGKey(0), **kw)
  model2 = Partial(_linear_model, {"w": jnp.float32(0.2)})  # new params, same structure
  samplers.sample(guidance.classifier_free(model2, 3.0, null), s, (2, 2, 2, 1), jax.random.PRNGKey(0), **kw)
  assert samplers._sample_jit._cache_size() == size
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_condition_mean_and_score_formulas():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  key1, key2, key3 = jax.random.split(jax.random.PRNGKey(2), 3)
  x_t = jax.random.normal(key1, (2, 2, 2, 3))
  eps = jax.random.normal(key2, x_t.shape)
  grad = jax.random.normal(key3, x_t.shape)
  t = jnp.array([10, 60])
  out = gaussian.p_mean_variance(s, eps, x_t, t, mean_type="eps", var_type="fixed_large", clip_denoised=False)
  shifted = guidance.condition_mean(out, grad)
  np.testing.assert_allclose(np.asarray(shifted["mean"]), np.asarray(out["mean"] + out["variance"] * grad), rtol=1e-6)
  scored = guidance.condition_score(s, out, x_t, t, grad)
  # The same as running the model with eps − sqrt(1 − ᾱ)·grad.
  b = np.sqrt(1 - np.asarray(s.alphas_cumprod)[np.asarray(t)]).reshape(-1, 1, 1, 1)
  want = gaussian.p_mean_variance(s, eps - b * grad, x_t, t, mean_type="eps", var_type="fixed_large",
                                  clip_denoised=False)
  np.testing.assert_allclose(np.asarray(scored["pred_x0"]), np.asarray(want["pred_x0"]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(scored["mean"]), np.asarray(want["mean"]), rtol=1e-4, atol=1e-5)


def test_classifier_guidance_pulls_samples_toward_the_class():
  # Gaussian data N(0, 1); the "classifier" log p(y|x_t) = −|x_t − 2|²/2 pulls toward 2.
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 100))

  def eps_model(x_t, t, cond):
    return s.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1) * x_t  # exact for N(0, 1) data

  grad_fn = lambda x_t, t, cond: 2.0 - x_t
  for method in ("ddpm", "ddim"):
    plain = samplers.sample(eps_model, s, (256, 2, 2, 1), jax.random.PRNGKey(3), method=method, mean_type="eps",
                            var_type="fixed_small", clip_denoised=False)
    guided = samplers.sample(eps_model, s, (256, 2, 2, 1), jax.random.PRNGKey(3), method=method, mean_type="eps",
                             var_type="fixed_small", clip_denoised=False, grad_fn=grad_fn)
    assert abs(float(plain.mean())) < 0.1
    assert float(guided.mean()) > 0.5, method


def test_dynamic_threshold_hand_example():
  x0 = jnp.array([[0.5, -3.0, 2.0, 0.1], [0.2, -0.4, 0.9, 0.0]]).reshape(2, 1, 2, 2)
  out = np.asarray(guidance.dynamic_threshold(x0, percentile=1.0)).reshape(2, 4)
  # Example 0: s = max|x0| = 3, so x0/3; example 1: s = max(0.9, 1) = 1, unchanged.
  np.testing.assert_allclose(out[0], np.array([0.5, -3.0, 2.0, 0.1]) / 3.0, rtol=1e-6)
  np.testing.assert_allclose(out[1], [0.2, -0.4, 0.9, 0.0], rtol=1e-6)
  # With a lower percentile the outliers are clipped to ±s first.
  out = np.asarray(guidance.dynamic_threshold(x0, percentile=0.5)).reshape(2, 4)
  s0 = np.quantile(np.abs([0.5, -3.0, 2.0, 0.1]), 0.5)  # 1.25
  np.testing.assert_allclose(out[0], np.clip([0.5, -3.0, 2.0, 0.1], -s0, s0) / s0, rtol=1e-6)


@pytest.mark.parametrize("method", samplers.METHODS)
def test_inpainting_keeps_the_known_region(method):
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 50))

  def eps_model(x_t, t, cond):
    return s.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1) * x_t * 0.5

  known = jnp.linspace(-0.9, 0.9, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
  mask = jnp.zeros((1, 4, 4, 1)).at[:, :, :2].set(1.0)  # left half known
  x, x0s = samplers.sample(eps_model, s, known.shape, jax.random.PRNGKey(4), method=method, mean_type="eps",
                           var_type="fixed_small", inpaint=(known, mask), return_x0=True, num_steps=8)
  np.testing.assert_allclose(np.asarray(x[:, :, :2]), np.asarray(known[:, :, :2]), atol=1e-6)
  np.testing.assert_allclose(np.asarray(x0s[:, :, :, :2]), np.broadcast_to(np.asarray(known[:, :, :2]),
                                                                          x0s[:, :, :, :2].shape), atol=1e-6)
  assert float(jnp.max(jnp.abs(x[:, :, 2:] - known[:, :, 2:]))) > 0.05


def test_inpaint_shape_errors():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 10))
  known = jnp.zeros((2, 4, 4, 3))
  with pytest.raises(ValueError, match="inpaint image"):
    samplers.sample(lambda x, t, c: x, s, (2, 4, 4, 1), jax.random.PRNGKey(0), method="ddim", mean_type="eps",
                    var_type="fixed_small", inpaint=(known, jnp.ones((1, 4, 4, 1))))
  with pytest.raises(ValueError, match="mask"):
    samplers.sample(lambda x, t, c: x, s, (2, 4, 4, 3), jax.random.PRNGKey(0), method="ddim", mean_type="eps",
                    var_type="fixed_small", inpaint=(known, jnp.ones((3, 4, 1))))
