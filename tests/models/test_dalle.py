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


def test_cached_decoding_equals_the_full_forward_pass_at_every_position():
  model = models.build(CONFIG)
  text, mask, image = _inputs()
  params = model.init(jax.random.PRNGKey(0), text, mask, image)["params"]
  text_logits, image_logits = model.apply({"params": params}, text, mask, image)
  assert text_logits.shape == (2, 5, 30) and image_logits.shape == (2, 9, 17)
  logits, cache = model.apply({"params": params}, text, mask, method="prefill")
  stepped = [logits]
  for i in range(8):
    logits, cache = model.apply({"params": params}, image[:, i], i, cache, method="decode")
    stepped.append(logits)
  np.testing.assert_allclose(np.stack(stepped, 1), image_logits, atol=2e-5)
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
