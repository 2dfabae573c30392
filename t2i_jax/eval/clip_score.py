"""CLIP score: how well images match their captions under a CLIP model of the project.

CLIP score = w · max(cos(E_image, E_text), 0), averaged over pairs, with w = 100
(Hessel et al., 2021 use 2.5 on top of this; papers on text-to-image mostly
report the 100-scaled cosine). Any `models.clip.CLIP` with its params works,
e.g. one trained with configs/shapes_clip.py (`pipelines.stage.load_stage`).
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.models import clip


@functools.partial(jax.jit, static_argnums=0)
def _scores(model, params, images, tokens, token_mask):
  variables = {"params": params}
  image_emb = model.apply(variables, clip.normalize_images(images), method="encode_image")
  text_emb = model.apply(variables, tokens, clip.eot_index_from_mask(token_mask), method="encode_text")
  return 100.0 * jnp.maximum(clip.cosine_similarity(image_emb, text_emb), 0.0)


def clip_scores(model, params, images, prompts: Sequence[str], tokenizer, batch_size: int = 256) -> np.ndarray:
  """float32 [N]: the CLIP score of each (image, prompt) pair.

  Args:
    images: uint8 [N, H, W, 3] or float in [-1, 1]; H = W = model.image_size.
    prompts: N captions, tokenised with `tokenizer` to model.text_ctx tokens.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 127.5 - 1.0
  if len(images) != len(prompts):
    raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; give one prompt per image.")
  if images.shape[1:3] != (model.image_size, model.image_size):
    raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but this CLIP reads "
                     f"{model.image_size}x{model.image_size}; resize them or use a CLIP trained at that size.")
  tokens, mask = tokenizer_lib.tokenize(tokenizer, list(prompts), model.text_ctx)
  out = [np.asarray(_scores(model, params, images[i:i + batch_size], tokens[i:i + batch_size], mask[i:i + batch_size]))
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)


def clip_score(model, params, images, prompts: Sequence[str], tokenizer, batch_size: int = 256) -> float:
  """The mean CLIP score over the pairs."""
  return float(np.mean(clip_scores(model, params, images, prompts, tokenizer, batch_size)))
