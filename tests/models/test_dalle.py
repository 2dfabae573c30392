"""DALL·E's transformer: the cached decode is the full forward pass, position by position.

Every model call is jitted (the module static): op by op, each call compiles dozens of small programs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.models import dalle
from tests.models.util import random_params

CONFIG = dict(name="dalle", text_vocab=30, text_len=6, image_vocab=17, image_side=3, width=32, layers=2, heads=4)


def _inputs(batch=2, seed=0):
  rng = np.random.default_rng(seed)
  text = rng.integers(1, 30, (batch, 6)).astype(np.int32)
  mask = np.arange(6)[None] < rng.integers(2, 7, (batch, 1))
  image = rng.integers(0, 17, (batch, 9)).astype(np.int32)
  return text, mask, image


@functools.partial(jax.jit, static_argnums=0)
def _init(model, *args):
  return model.init(jax.random.PRNGKey(0), *args)["params"]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(model, method, params, *args):
  return model.apply({"params": params}, *args, method=method)


@functools.partial(jax.jit, static_argnums=0)
def _decoded_logits(model, params, text, mask, image):
  """[B, N, V]: the caption prefilled, then each image token fed through the cache, one step at a time (a
  scan over the decode steps, as a sampler runs them)."""
  logits, cache = model.apply({"params": params}, text, mask, method="prefill")

  def step(cache, inputs):
    token, index = inputs
    logits, cache = model.apply({"params": params}, token, index, cache, method="decode")
    return cache, logits

  _, stepped = jax.lax.scan(step, cache, (image[:, :-1].T, jnp.arange(image.shape[1] - 1)))
  return jnp.concatenate([logits[:, None], stepped.transpose(1, 0, 2)], 1)


def test_cached_decoding_equals_the_full_forward_pass_at_every_position():
  model = models.build(CONFIG)
  text, mask, image = _inputs()
  params = _init(model, text, mask, image)
  text_logits, image_logits = _apply(model, "__call__", params, text, mask, image)
  assert text_logits.shape == (2, 5, 30) and image_logits.shape == (2, 9, 17)
  image_logits = np.asarray(image_logits)
  np.testing.assert_allclose(_decoded_logits(model, params, text, mask, image), image_logits, atol=2e-5)
  # Causal: changing a later image token leaves every earlier prediction alone.
  changed = image.copy()
  changed[:, 5] = (image[:, 5] + 1) % 17
  other = np.asarray(_apply(model, "__call__", params, text, mask, changed)[1])
  np.testing.assert_allclose(other[:, :6], image_logits[:, :6], atol=1e-6)
  assert np.abs(other[:, 6:] - image_logits[:, 6:]).max() > 1e-4


def test_padding_has_a_learned_embedding_per_position_and_bad_shapes_are_refused():
  model = models.build(CONFIG)
  text, mask, image = _inputs()
  params = jax.tree.map(np.asarray, _init(model, text, mask, image))
  null, null_mask = map(np.asarray, dalle.null_text(2, 6))
  embedded = np.asarray(_apply(model, "embed_text", params, null, null_mask))
  np.testing.assert_allclose(embedded[0], params["text_pad"] + params["text_pos"], atol=1e-6)
  # The token ids under padding do not matter.
  other = _apply(model, "embed_text", params, null + 7, null_mask)
  np.testing.assert_allclose(other, embedded)
  with pytest.raises(ValueError, match=r"this transformer reads \[B, 6\]"):
    _apply(model, "__call__", params, text[:, :4], mask[:, :4], image)
  with pytest.raises(ValueError, match="grid is at most"):
    _apply(model, "__call__", params, text, mask, np.zeros((2, 12), np.int32))


def test_the_dvae_relaxed_sample_tends_to_one_hot_as_the_temperature_falls():
  from t2i_jax.models import dvae  # pylint: disable=g-import-not-at-top

  logits = np.random.default_rng(0).standard_normal((4096, 16), np.float32)
  relaxed = jax.jit(dvae.relaxed_codes)  # one program for every temperature
  samples = {t: np.asarray(relaxed(logits, jax.random.PRNGKey(1), t)) for t in (4.0, 1.0, 1 / 4, 1 / 16, 1 / 64)}
  peaks = [float(np.mean(np.max(sample, -1))) for sample in samples.values()]
  assert all(a < b for a, b in zip(peaks, peaks[1:])), peaks
  assert peaks[0] < 0.3 and peaks[-1] > 0.98
  # The relaxed sample's argmax is the Gumbel-max sample whatever τ: the categorical of the logits.
  np.testing.assert_array_equal(np.argmax(samples[1.0], -1), np.argmax(samples[1 / 16], -1))


def test_a_vq_model_tokenizes_as_its_quantiser_does():
  from configs import shapes_autoencoder  # pylint: disable=g-import-not-at-top

  vq = models.build(shapes_autoencoder.get_config("vq,runlocal").model)
  x = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 16, 16, 3)).astype(np.float32)
  # Random params (a compiled init costs twice the four calls), and the four calls in one program.
  variables = random_params(vq, jax.random.PRNGKey(1), x)

  @jax.jit
  def tokenize_both_ways(variables, x):
    codes = vq.apply(variables, x, method="encode_indices")
    by_indices = vq.apply(variables, codes, method="decode_indices")
    return codes, by_indices, vq.apply(variables, vq.apply(variables, x, method="encode"), method="decode")

  codes, by_indices, by_latents = tokenize_both_ways(variables, x)
  assert codes.shape == (2, 8, 8) and codes.dtype == jnp.int32
  np.testing.assert_allclose(by_indices, by_latents, atol=1e-4)


def test_sparse_attention_masks_on_a_hand_made_grid():
  # Caption of 2 positions, a 3 × 3 grid: image code i sits at position 2 + i.
  # Jitted (the kind and sizes static): op by op, each kind compiles its handful of comparisons.
  attention_mask = jax.jit(dalle.attention_mask, static_argnums=(0, 2, 3, 4, 5))
  mask = lambda kind, q: np.flatnonzero(attention_mask(kind, np.asarray([2 + q]), 11, 2, 3, 3)[0]) - 2  # noqa
  assert list(mask("full", 4)) == [-2, -1, 0, 1, 2, 3, 4]
  assert list(mask("row", 4)) == [-2, -1, 2, 3, 4]          # the rest of the row above, its row so far
  assert list(mask("column", 4)) == [-2, -1, 1, 4]          # the code above it
  assert list(mask("conv", 8)) == [-2, -1, 4, 5, 7, 8]      # its 3 × 3 window's earlier codes
  # Text queries stay causal over the caption.
  assert list(np.flatnonzero(attention_mask("row", np.asarray([1]), 11, 2, 3)[0])) == [0, 1]


def test_cached_decoding_equals_the_full_pass_with_sparse_attention():
  model = models.build(dict(CONFIG, layers=4, attention=("row", "column", "row", "conv"), conv_kernel=3))
  text, mask, image = _inputs(seed=1)
  params = _init(model, text, mask, image)
  _, image_logits = _apply(model, "__call__", params, text, mask, image)
  np.testing.assert_allclose(_decoded_logits(model, params, text, mask, image), image_logits, atol=2e-5)
  with pytest.raises(ValueError, match="give one of"):
    _init(models.build(dict(CONFIG, attention=("row",))), text, mask, image)
