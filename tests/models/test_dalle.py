"""DALL·E's transformer: the cached decode is the full forward pass, position by position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.models import dalle

CONFIG = dict(name="dalle", text_vocab=30, text_len=6, image_vocab=17, image_side=3, width=32, layers=2, heads=4)


def _inputs(batch=2, seed=0):
  rng = np.random.default_rng(seed)
  text = jnp.asarray(rng.integers(1, 30, (batch, 6)), jnp.int32)
  mask = jnp.asarray(np.arange(6)[None] < rng.integers(2, 7, (batch, 1)))
  image = jnp.asarray(rng.integers(0, 17, (batch, 9)), jnp.int32)
  return text, mask, image


def _decoded_logits(model, params, text, mask, image):
  """[B, N, V]: the caption prefilled, then each image token fed through the cache, one step at a time."""
  logits, cache = model.apply({"params": params}, text, mask, method="prefill")
  stepped = [logits]
  for i in range(image.shape[1] - 1):
    logits, cache = model.apply({"params": params}, image[:, i], i, cache, method="decode")
    stepped.append(logits)
  return np.stack(stepped, 1)


def test_cached_decoding_equals_the_full_forward_pass_at_every_position():
  model = models.build(CONFIG)
  text, mask, image = _inputs()
  params = model.init(jax.random.PRNGKey(0), text, mask, image)["params"]
  text_logits, image_logits = model.apply({"params": params}, text, mask, image)
  assert text_logits.shape == (2, 5, 30) and image_logits.shape == (2, 9, 17)
  np.testing.assert_allclose(_decoded_logits(model, params, text, mask, image), image_logits, atol=2e-5)
  # Causal: changing a later image token leaves every earlier prediction alone.
  changed = image.at[:, 5].set((image[:, 5] + 1) % 17)
  _, other = model.apply({"params": params}, text, mask, changed)
  np.testing.assert_allclose(other[:, :6], image_logits[:, :6], atol=1e-6)
  assert np.abs(other[:, 6:] - image_logits[:, 6:]).max() > 1e-4


def test_padding_has_a_learned_embedding_per_position_and_bad_shapes_are_refused():
  model = models.build(CONFIG)
  text, mask, image = _inputs()
  params = model.init(jax.random.PRNGKey(0), text, mask, image)["params"]
  null, null_mask = dalle.null_text(2, 6)
  embedded = model.apply({"params": params}, null, null_mask, method="embed_text")
  np.testing.assert_allclose(embedded[0], params["text_pad"] + params["text_pos"], atol=1e-6)
  # The token ids under padding do not matter.
  other = model.apply({"params": params}, null + 7, null_mask, method="embed_text")
  np.testing.assert_allclose(other, embedded)
  with pytest.raises(ValueError, match=r"this transformer reads \[B, 6\]"):
    model.apply({"params": params}, text[:, :4], mask[:, :4], image)
  with pytest.raises(ValueError, match="grid is at most"):
    model.apply({"params": params}, text, mask, jnp.zeros((2, 12), jnp.int32))


def test_the_dvae_relaxed_sample_tends_to_one_hot_as_the_temperature_falls():
  from t2i_jax.models import dvae  # pylint: disable=g-import-not-at-top

  logits = jax.random.normal(jax.random.PRNGKey(0), (4096, 16))
  peaks = [float(jnp.mean(jnp.max(dvae.relaxed_codes(logits, jax.random.PRNGKey(1), t), -1)))
           for t in (4.0, 1.0, 1 / 4, 1 / 16, 1 / 64)]
  assert all(a < b for a, b in zip(peaks, peaks[1:])), peaks
  assert peaks[0] < 0.3 and peaks[-1] > 0.98
  # The relaxed sample's argmax is the Gumbel-max sample whatever τ: the categorical of the logits.
  hard = [jnp.argmax(dvae.relaxed_codes(logits, jax.random.PRNGKey(1), t), -1) for t in (1.0, 1 / 16)]
  np.testing.assert_array_equal(hard[0], hard[1])


def test_a_vq_model_tokenizes_as_its_quantiser_does():
  from configs import shapes_autoencoder  # pylint: disable=g-import-not-at-top

  vq = models.build(shapes_autoencoder.get_config("vq,runlocal").model)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1.0, maxval=1.0)
  variables = vq.init(jax.random.PRNGKey(1), x)
  codes = vq.apply(variables, x, method="encode_indices")
  assert codes.shape == (2, 8, 8) and codes.dtype == jnp.int32
  np.testing.assert_allclose(vq.apply(variables, codes, method="decode_indices"),
                             vq.apply(variables, vq.apply(variables, x, method="encode"), method="decode"), atol=1e-4)


def test_sparse_attention_masks_on_a_hand_made_grid():
  # Caption of 2 positions, a 3 × 3 grid: image code i sits at position 2 + i.
  mask = lambda kind, q: np.flatnonzero(dalle.attention_mask(kind, jnp.asarray([2 + q]), 11, 2, 3, 3)[0]) - 2  # noqa
  assert list(mask("full", 4)) == [-2, -1, 0, 1, 2, 3, 4]
  assert list(mask("row", 4)) == [-2, -1, 2, 3, 4]          # the rest of the row above, its row so far
  assert list(mask("column", 4)) == [-2, -1, 1, 4]          # the code above it
  assert list(mask("conv", 8)) == [-2, -1, 4, 5, 7, 8]      # its 3 × 3 window's earlier codes
  # Text queries stay causal over the caption.
  assert list(np.flatnonzero(dalle.attention_mask("row", jnp.asarray([1]), 11, 2, 3)[0])) == [0, 1]


def test_cached_decoding_equals_the_full_pass_with_sparse_attention():
  model = models.build(dict(CONFIG, layers=4, attention=("row", "column", "row", "conv"), conv_kernel=3))
  text, mask, image = _inputs(seed=1)
  params = model.init(jax.random.PRNGKey(2), text, mask, image)["params"]
  _, image_logits = model.apply({"params": params}, text, mask, image)
  np.testing.assert_allclose(_decoded_logits(model, params, text, mask, image), image_logits, atol=2e-5)
  with pytest.raises(ValueError, match="give one of"):
    models.build(dict(CONFIG, attention=("row",))).init(jax.random.PRNGKey(0), text, mask, image)
