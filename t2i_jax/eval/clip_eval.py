"""Judging a CLIP on captioned shapes: zero-shot accuracy per attribute, and retrieval.

Zero-shot: each test image's caption is ranked against the captions that differ from it in exactly
one attribute, every other value of that attribute in turn (colour 6 ways, shape 5, size 2, position 9
for one-object scenes; the relation 4 ways for two-object scenes, so the mirror relation, which names
the same two objects with their sides swapped, is among them). All candidates of one image share its
template and synonyms (drawn per image), so only the attribute's word differs. Accuracy is top-1, with
a tie shared among the tied candidates: an embedding that cannot tell the values apart scores chance
(1/6, 1/5, 1/2, 1/9, 1/4), not whichever value is listed first.

Retrieval: image→text and text→image R@1 over the test split's images and their dataset captions
(every template and synonym); a retrieved item counts when its scene is the query's (the same canonical
caption), since the test split repeats scenes.

The held-out colour–shape pairs (red triangle, blue circle; never seen in training) are scored on the
heldout split's one-object images, per attribute, on their own.

  python -m t2i_jax.main --config=configs/shapes_clip.py --workdir=runs/shapes_clip --mode=eval
"""

import dataclasses
import functools
from typing import Callable, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import captions, shapes
from t2i_jax.eval.attribute_probe import ATTRIBUTES  # a one-object caption's attributes and their values
from t2i_jax.models import clip

COLUMNS = ("step", "color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy", "relation_accuracy",
           "image_to_text_r1", "text_to_image_r1", "heldout_color_accuracy", "heldout_shape_accuracy",
           "heldout_size_accuracy", "heldout_position_accuracy", "num_single", "num_pair", "num_heldout")

# uint8 images [N, H, W, 3] -> embeddings [N, E];  captions (N str) -> embeddings [N, E].
EmbedImages = Callable[[np.ndarray], np.ndarray]
EmbedTexts = Callable[[Sequence[str]], np.ndarray]


def top1_accuracy(scores: np.ndarray, correct: np.ndarray, atol: float = 1e-6) -> float:
  """Mean over rows of the share of correct candidates among the top-scoring ones.

  Args:
    scores: float [N, K], higher is better.
    correct: bool [N, K], which candidates are right (at least one per row).
    atol: scores within atol of a row's best tie with it.

  Returns:
    Top-1 accuracy in [0, 1], ties split evenly (expected accuracy under random tie-breaking).
  """
  scores, correct = np.asarray(scores, np.float64), np.asarray(correct, bool)
  top = scores >= scores.max(axis=1, keepdims=True) - atol
  return float(np.mean((top & correct).sum(axis=1) / top.sum(axis=1)))


def _plain(scene: captions.Scene) -> captions.Scene:
  """The scene without its layout's centres (its caption's structure only)."""
  return captions.Scene(tuple(dataclasses.replace(o, center=None) for o in scene.objects), scene.relation)


def _candidates(scene: captions.Scene, field: str, rng: np.random.Generator) -> List[str]:
  """Captions of the scene with `field` set to each of its values in turn (the true one included), all
  with the template and synonyms of one draw from rng."""
  scene = _plain(scene)
  if field == "relation":
    variants = [captions.Scene(scene.objects, r) for r in range(len(captions.RELATIONS))]
  else:
    names = dict(ATTRIBUTES)[field]
    variants = [captions.Scene((dataclasses.replace(scene.objects[0], **{field: v}),)) for v in range(len(names))]
  uniforms = rng.random(captions.NUM_CAPTION_UNIFORMS)
  return [captions.caption_from_uniforms(v, uniforms)[0] for v in variants]


def zero_shot(image_emb: np.ndarray, embed_texts: EmbedTexts, scenes: Sequence[captions.Scene],
              fields: Sequence[str], seed: int = 0) -> Dict[str, float]:
  """{field_accuracy: top-1 accuracy} of ranking each image's caption among its one-attribute variants.

  image_emb: [N, E], the embeddings of renders of `scenes` (one-object scenes for colour/shape/size/
  position, two-object scenes for "relation"). Image i's captions use template seed (seed, i).
  """
  image_emb = clip.l2_normalize(np.asarray(image_emb))
  out = {}
  for field in fields:
    texts, truth = [], []
    for i, scene in enumerate(scenes):
      texts.append(_candidates(scene, field, np.random.default_rng([seed, i])))
      truth.append(scene.relation if field == "relation" else getattr(scene.objects[0], field))
    num = len(texts[0])
    text_emb = clip.l2_normalize(np.asarray(embed_texts([t for row in texts for t in row])))
    scores = np.einsum("ne,nke->nk", image_emb, text_emb.reshape(len(scenes), num, -1))
    out[f"{field}_accuracy"] = top1_accuracy(scores, np.arange(num)[None] == np.asarray(truth)[:, None])
  return out


def retrieval(image_emb: np.ndarray, text_emb: np.ndarray, keys: Sequence[str]) -> Dict[str, float]:
  """Image→text and text→image R@1 of pairs (image_emb[i], text_emb[i]), [N, E] each; an item counts as
  found when its key (its scene's canonical caption) is the query's, ties split (top1_accuracy)."""
  scores = np.asarray(clip.l2_normalize(image_emb) @ clip.l2_normalize(text_emb).T)
  keys = np.asarray(keys)
  same = keys[:, None] == keys[None, :]
  return {"image_to_text_r1": top1_accuracy(scores, same), "text_to_image_r1": top1_accuracy(scores.T, same.T)}


def evaluate(embed_images: EmbedImages, embed_texts: EmbedTexts, image_size: int, data_seed: int = 0,
             num: int = 500, seed: int = 0) -> Dict[str, float]:
  """The CLIP eval's metrics from the first `num` examples of the test and heldout splits of the captioned-
  shapes stream `data_seed` (the data the CLIP's dataset holds out), rendered at image_size.

  Returns:
    {<attribute>_accuracy for colour, shape, size, position (one-object test images) and relation
    (two-object test images); image_to_text_r1, text_to_image_r1 (all test images, dataset captions);
    heldout_<attribute>_accuracy (one-object heldout images); num_single, num_pair, num_heldout}:
    accuracies in [0, 1] and image counts.
  """
  images, texts, scenes = shapes.render_batch("test", data_seed, 0, num, image_size)
  single = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
  pair = [i for i, s in enumerate(scenes) if len(s.objects) == 2]
  fields = [f for f, _ in ATTRIBUTES]
  image_emb = np.asarray(embed_images(images))  # once, for the zero-shot subsets and retrieval
  out = zero_shot(image_emb[single], embed_texts, [scenes[i] for i in single], fields, seed)
  out.update(zero_shot(image_emb[pair], embed_texts, [scenes[i] for i in pair], ["relation"], seed))
  keys = [captions.caption_for(_plain(s)) for s in scenes]
  out.update(retrieval(image_emb, np.asarray(embed_texts(texts)), keys))
  held_images, _, held_scenes = shapes.render_batch("heldout", data_seed, 0, num, image_size)
  held = [i for i, s in enumerate(held_scenes) if len(s.objects) == 1]
  held_acc = zero_shot(embed_images(held_images[held]), embed_texts, [held_scenes[i] for i in held], fields, seed)
  out.update({f"heldout_{k}": v for k, v in held_acc.items()})
  out.update(num_single=len(single), num_pair=len(pair), num_heldout=len(held))
  return out


@functools.partial(jax.jit, static_argnums=0)
def _image_embeddings(model, params, images):
  t = jnp.zeros((images.shape[0],), jnp.int32) if model.timestep_conditioned else None
  return model.apply({"params": params}, clip.normalize_images(images), t, method="encode_image")


@functools.partial(jax.jit, static_argnums=0)
def _text_embeddings(model, params, tokens, token_mask):
  return model.apply({"params": params}, tokens, clip.eot_index_from_mask(token_mask), method="encode_text")


def stage_embedders(stage, batch_size: int = 250):
  """(EmbedImages, EmbedTexts) of a CLIP stage (pipelines.stage.Stage), batched; a noised CLIP reads its
  images as clean (t = 0)."""
  from t2i_jax.data import tokenizer as tokenizer_lib

  model, params = stage.model, stage.params

  def batched(fn, *arrays):
    # Every call at batch_size rows (the last batch padded with copies of the first row, then dropped): one
    # compiled program per embedder, where each remainder's size would compile another.
    num = len(arrays[0])
    padded = [np.concatenate([a, np.repeat(a[:1], -num % batch_size, axis=0)]) for a in arrays]
    return np.concatenate([np.asarray(fn(*(a[i:i + batch_size] for a in padded)))
                           for i in range(0, num, batch_size)])[:num]

  def embed_images(images):
    return batched(lambda x: _image_embeddings(model, params, jnp.asarray(shapes.to_float(x))), np.asarray(images))

  def embed_texts(texts):
    tokens, mask = tokenizer_lib.tokenize(stage.tokenizer, list(texts), model.text_ctx)
    return batched(lambda t, m: _text_embeddings(model, params, t, m), tokens, mask)

  return embed_images, embed_texts
