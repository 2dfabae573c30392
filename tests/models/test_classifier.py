"""The noisy classifier and the classifier-guidance gradient it provides."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import samplers, schedules
from t2i_jax.models.classifier import NoisyClassifier, classifier_grad_fn
from tests.models.util import random_params

TINY = dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
            num_head_channels=16, num_classes=5)
# One level at 8×8 (with attention and the pooled token): about half TINY's compile, for the sampling test, which
# compiles the classifier's gradient into the sampler.
ONE = dict(TINY, image_size=8, channel_mult=(1,))


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, x, t):
  return model.apply(params, x, t)


def _setup(fields, size):
  model = NoisyClassifier(**fields)
  x = np.random.default_rng(0).standard_normal((3, size, size, 3), np.float32)
  t = np.array([0, 10, 99], np.int32)
  # Random, not init: at init the zero-initialised residual branches hide the timestep.
  params = random_params(model, jax.random.PRNGKey(2), x, t)
  return model, params, x, t


@pytest.fixture(scope="module")
def setup():
  return _setup(TINY, 16)


def test_logits_shape_and_timestep_dependence(setup):
  model, params, x, t = setup
  logits = _apply(model, params, x, t)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  logits = np.asarray(logits)
  other_t = np.asarray(_apply(model, params, x, t + 50))
  assert np.abs(logits - other_t).max() > 1e-4
  # The pooled mean token sees every position: changing one pixel changes the logits.
  moved = x.copy()
  moved[:, 0, 0] += 3.0
  assert np.abs(np.asarray(_apply(model, params, moved, t)) - logits).max() > 1e-5


def test_grad_fn_matches_finite_differences_and_scales(setup):
  model, params, x, t = setup
  apply_fn = lambda x_t, t_: _apply(model, params, x_t, t_)  # noqa: E731
  y = np.array([0, 3, 4])
  grad = jax.jit(lambda x, t, y: classifier_grad_fn(apply_fn, scale=2.0)(x, t, {"y": y}))(x, t, y)
  assert grad.shape == x.shape

  def log_p(x_):
    logits = np.asarray(apply_fn(x_, t), np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(np.sum(np.take_along_axis(log_softmax, y[:, None], -1)))

  direction = np.random.default_rng(2).standard_normal(x.shape, np.float32)
  eps = 1e-2
  fd = (log_p(x + eps * direction) - log_p(x - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(float(np.sum(np.asarray(grad) * direction)) / 2.0, fd, rtol=2e-2)


def test_classifier_guided_sampling_runs_through_the_core():
  model, params, _, _ = _setup(ONE, 8)
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 20))
  grad_fn = classifier_grad_fn(lambda x_t, t: model.apply(params, x_t, t), scale=1.0)
  eps_model = lambda x_t, t, cond: 0.1 * x_t
  out = samplers.sample(eps_model, s, (2, 8, 8, 3), jax.random.PRNGKey(0), method="ddpm", mean_type="eps",
                        var_type="fixed_small", cond={"y": jnp.array([1, 2])}, grad_fn=grad_fn)
  assert out.shape == (2, 8, 8, 3) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("fields, shape, match", [
    (dict(attention_resolutions=(4,)), (1, 16, 16, 3), "never occur"),
    (dict(image_size=18, channel_mult=(1, 2, 2)), (1, 18, 18, 3), "cannot be halved"),
    (dict(), (1, 16, 16, 1), "expects"),
])
def test_bad_input_raises(fields, shape, match):
  model = NoisyClassifier(**{**TINY, **fields})
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.zeros((1,), jnp.int32))
