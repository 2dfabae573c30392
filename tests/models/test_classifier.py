"""The noisy classifier and the classifier-guidance gradient it provides."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import samplers, schedules
from t2i_jax.models.classifier import NoisyClassifier, classifier_grad_fn
from tests.models.util import random_params

TINY = dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
            num_head_channels=16, num_classes=5)


def _setup():
  model = NoisyClassifier(**TINY)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 3))
  t = jnp.array([0, 10, 99], jnp.int32)
  # Random, not init: at init the zero-initialised residual branches hide the timestep.
  params = random_params(model, jax.random.PRNGKey(2), x, t)
  return model, params, x, t


def test_logits_shape_and_timestep_dependence():
  model, params, x, t = _setup()
  apply = jax.jit(model.apply)
  logits = apply(params, x, t)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  other_t = apply(params, x, t + 50)
  assert float(jnp.max(jnp.abs(logits - other_t))) > 1e-4
  # The pooled mean token sees every position: changing one pixel changes the logits.
  assert float(jnp.max(jnp.abs(apply(params, x.at[:, 0, 0].add(3.0), t) - logits))) > 1e-5


def test_grad_fn_matches_finite_differences_and_scales():
  model, params, x, t = _setup()
  apply_fn = jax.jit(lambda x_t, t_: model.apply(params, x_t, t_))
  y = jnp.array([0, 3, 4])
  grad = classifier_grad_fn(apply_fn, scale=2.0)(x, t, {"y": y})
  assert grad.shape == x.shape

  def log_p(x_):
    return float(jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(apply_fn(x_, t)), y[:, None], -1)))

  direction = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  eps = 1e-2
  fd = (log_p(x + eps * direction) - log_p(x - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(float(jnp.sum(grad * direction)) / 2.0, fd, rtol=2e-2)


def test_classifier_guided_sampling_runs_through_the_core():
  model, params, _, _ = _setup()
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 20))
  grad_fn = classifier_grad_fn(lambda x_t, t: model.apply(params, x_t, t), scale=1.0)
  eps_model = lambda x_t, t, cond: 0.1 * x_t
  out = samplers.sample(eps_model, s, (2, 16, 16, 3), jax.random.PRNGKey(0), method="ddpm", mean_type="eps",
                        var_type="fixed_small", cond={"y": jnp.array([1, 2])}, grad_fn=grad_fn)
  assert out.shape == (2, 16, 16, 3) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("fields, shape, match", [
    (dict(attention_resolutions=(4,)), (1, 16, 16, 3), "never occur"),
    (dict(image_size=18, channel_mult=(1, 2, 2)), (1, 18, 18, 3), "cannot be halved"),
    (dict(), (1, 16, 16, 1), "expects"),
])
def test_bad_input_raises(fields, shape, match):
  model = NoisyClassifier(**{**TINY, **fields})
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.zeros((1,), jnp.int32))
