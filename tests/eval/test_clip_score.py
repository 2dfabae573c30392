"""CLIP score: 100·max(cos, 0) of the model's own embeddings, per pair, with clear errors."""

import jax
import numpy as np
import pytest

from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.eval import clip_score
from t2i_jax.models import clip

MODEL = clip.CLIP(image_size=16, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, text_ctx=20,
                  vocab_size=64, text_width=32, text_layers=1, text_heads=2, embed_dim=16)


def test_scores_are_the_clipped_scaled_cosine_of_the_embeddings():
  tok = tokenizer_lib.load_tokenizer("shapes")
  images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
  prompts = ["a small red circle at the top", "a large blue square", "a green star", "a tiny yellow cross",
             "a big purple triangle on the left"]
  params = jax.jit(MODEL.init)(jax.random.key(0, impl="rbg"), np.zeros((1, 16, 16, 3), np.float32),
                               np.zeros((1, 20), np.int32))["params"]
  scores = clip_score.clip_scores(MODEL, params, images, prompts, tok)
  tokens, mask = tokenizer_lib.tokenize(tok, prompts, 20)
  x = clip.normalize_images(images.astype(np.float32) / 127.5 - 1.0)
  image_emb, text_emb, _ = jax.jit(MODEL.apply)({"params": params}, x, tokens, None, mask.sum(-1) - 1)
  a = image_emb / np.linalg.norm(image_emb, axis=-1, keepdims=True)
  b = text_emb / np.linalg.norm(text_emb, axis=-1, keepdims=True)
  expected = 100 * np.maximum(np.sum(a * b, axis=-1), 0)
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
  assert clip_score.clip_score(MODEL, params, images, prompts, tok) == pytest.approx(expected.mean(), rel=1e-4)
  with pytest.raises(ValueError, match="one prompt per image"):
    clip_score.clip_scores(MODEL, params, images, prompts[:3], tok)
  with pytest.raises(ValueError, match="this CLIP reads 16x16"):
    clip_score.clip_scores(MODEL, params, np.zeros((5, 32, 32, 3), np.uint8), prompts, tok)
