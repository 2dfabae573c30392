"""The CLIP eval's numbers on hand-built embeddings whose knowledge is known exactly."""

import numpy as np
import pytest

from t2i_jax.data import captions, shapes
from t2i_jax.eval import clip_eval


def _colour_of_image(image: np.ndarray) -> int:
  """The id of the COLOR_RGB nearest to the image's most saturated pixel (the object's fill)."""
  pixels = image.reshape(-1, 3).astype(np.float64)
  fill = pixels[np.argmax(pixels.max(axis=1) - pixels.min(axis=1))]
  return int(np.argmin(np.linalg.norm(np.asarray(shapes.COLOR_RGB) - fill, axis=1)))


def _colour_only_embedders():
  """Image and text embeddings that know an object's colour (one-hot) and nothing else."""
  def embed_images(images):
    return np.eye(len(captions.COLORS))[[_colour_of_image(x) for x in images]]

  def embed_texts(texts):
    return np.eye(len(captions.COLORS))[[next(i for i, c in enumerate(captions.COLORS) if c in t.split())
                                         for t in texts]]
  return embed_images, embed_texts


def _one_object_test_scenes(num):
  images, _, scenes = shapes.render_batch("test", 0, 0, num, 16)
  keep = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
  return images[keep], [scenes[i] for i in keep]


def test_colour_only_embeddings_read_every_colour_and_chance_for_the_rest():
  images, scenes = _one_object_test_scenes(80)
  assert len(scenes) >= 30
  embed_images, embed_texts = _colour_only_embedders()
  accuracy = clip_eval.zero_shot(embed_images(images), embed_texts, scenes, ["color", "shape", "size", "position"])
  assert accuracy["color_accuracy"] == 1.0
  # Every shape, size and position candidate ties, so each scores exactly its chance.
  assert accuracy["shape_accuracy"] == pytest.approx(1 / 5)
  assert accuracy["size_accuracy"] == pytest.approx(1 / 2)
  assert accuracy["position_accuracy"] == pytest.approx(1 / 9)


def test_candidates_share_the_template_and_differ_in_the_attribute_word_only():
  _, scenes = _one_object_test_scenes(20)
  colours = clip_eval._candidates(scenes[0], "color", np.random.default_rng([0, 3]))
  positions = clip_eval._candidates(scenes[0], "position", np.random.default_rng([0, 3]))
  assert len(set(colours)) == 6 and len(set(positions)) == 9
  for candidate in colours[1:]:
    assert sum(a != b for a, b in zip(candidate.split(), colours[0].split())) == 1
  # The true caption is the candidate at the scene's own value.
  assert captions.COLORS[scenes[0].objects[0].color] in colours[scenes[0].objects[0].color].split()


def test_relation_candidates_are_the_four_relations_of_the_same_objects():
  _, _, scenes = shapes.render_batch("test", 0, 0, 40, 16)
  pair = next(s for s in scenes if len(s.objects) == 2)
  texts = clip_eval._candidates(pair, "relation", np.random.default_rng(0))
  assert len(set(texts)) == 4
  assert texts[pair.relation] == captions.caption_from_uniforms(
      clip_eval._plain(pair), np.random.default_rng(0).random(captions.NUM_CAPTION_UNIFORMS))[0]


def test_retrieval_counts_any_item_of_the_same_scene_and_splits_ties():
  keys = ["a", "a", "b", "c"]
  onehot = np.eye(3)[[0, 0, 1, 2]]
  assert clip_eval.retrieval(onehot, onehot, keys) == {"image_to_text_r1": 1.0, "text_to_image_r1": 1.0}
  # Images that all embed alike tie with every text: each query finds its scene with chance = its share.
  flat = clip_eval.retrieval(np.ones((4, 3)), onehot, keys)
  assert flat["image_to_text_r1"] == pytest.approx(np.mean([2 / 4, 2 / 4, 1 / 4, 1 / 4]))
  # A text tower that swaps scenes "b" and "c" loses exactly those two.
  swapped = np.eye(3)[[0, 0, 2, 1]]
  assert clip_eval.retrieval(onehot, swapped, keys)["image_to_text_r1"] == pytest.approx(0.5)


def test_top1_accuracy_splits_ties_among_the_top_candidates():
  scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 0.0, 3.0]])
  correct = np.array([[True, False, False], [False, True, False], [False, True, False]])
  assert clip_eval.top1_accuracy(scores, correct) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
