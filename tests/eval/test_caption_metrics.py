"""Caption and binding metrics on hand-built readings."""

import math

import numpy as np
import pytest

from t2i_jax.data import shapes
from t2i_jax.data.captions import ObjectSpec, Scene
from t2i_jax.eval import caption_metrics, oracle

RED_CIRCLE = ObjectSpec("red", "circle", "small")
BLUE_STAR = ObjectSpec("blue", "star", "large")
GREEN_SQUARE = ObjectSpec("green", "square", "large")

PROMPTS = [
    Scene((ObjectSpec("yellow", "cross", "large", "top left"),)),
    Scene((ObjectSpec("purple", "square", "small", "center"),)),
    Scene((RED_CIRCLE, BLUE_STAR), "right of"),
    Scene((GREEN_SQUARE, RED_CIRCLE), "above"),
]


def _perfect(scenes):
  return {k: v.copy() for k, v in oracle.targets(scenes).items()}


def test_perfect_readings_score_one():
  m = caption_metrics.compute(_perfect(PROMPTS), PROMPTS)
  assert all(m[k] == 1.0 for k in caption_metrics.METRICS), m
  assert (m["num_prompts"], m["num_one_object"], m["num_two_object"]) == (4.0, 2.0, 2.0)


def test_wrong_colour_fails_the_caption_but_keeps_shape_accuracy():
  r = _perfect(PROMPTS)
  r["color"][0, 0] = 1  # green instead of yellow
  m = caption_metrics.compute(r, PROMPTS)
  assert m["color_accuracy"] == 0.5 and m["caption_accuracy"] == 0.5
  assert m["shape_accuracy"] == 1.0 and m["size_accuracy"] == 1.0 and m["position_accuracy"] == 1.0
  assert m["binding_accuracy"] == 1.0


def test_wrong_position_or_count_fails_the_caption():
  r = _perfect(PROMPTS)
  r["position"][1] = 5
  m = caption_metrics.compute(r, PROMPTS)
  assert m["position_accuracy"] == 0.5 and m["caption_accuracy"] == 0.5 and m["color_accuracy"] == 1.0
  r = _perfect(PROMPTS)
  r["count"][0], r["position"][0], r["orientation"][0] = 2, -1, 0  # a second object appeared
  r["color"][0, 1], r["shape"][0, 1], r["size"][0, 1] = 3, 4, 1
  m = caption_metrics.compute(r, PROMPTS)
  assert m["count_accuracy"] == 0.75 and m["caption_accuracy"] == 0.5 and m["shape_accuracy"] == 1.0


def test_caption_hits_mark_the_one_object_images_that_show_their_prompt():
  r = _perfect(PROMPTS)
  np.testing.assert_array_equal(caption_metrics.caption_hits(r, PROMPTS), [True, True, False, False])
  r["shape"][1, 0] = 0  # a circle where the prompt asks for a square
  np.testing.assert_array_equal(caption_metrics.caption_hits(r, PROMPTS), [True, False, False, False])
  assert caption_metrics.caption_hits(r, PROMPTS).mean() * 2 == caption_metrics.compute(r, PROMPTS)["caption_accuracy"]


def test_swapped_relation_fails_binding_but_not_objects():
  # "red circle right of blue star" drawn as the red circle on the LEFT: same objects, swapped slots.
  r = _perfect(PROMPTS)
  for k in ("color", "shape", "size"):
    r[k][2] = r[k][2, ::-1]
  m = caption_metrics.compute(r, PROMPTS)
  assert m["binding_accuracy"] == 0.5 and m["objects_accuracy"] == 1.0
  # The right order but stacked vertically instead of side by side: the relation is wrong too.
  r = _perfect(PROMPTS)
  r["orientation"][2] = 1
  assert caption_metrics.compute(r, PROMPTS)["binding_accuracy"] == 0.5


def test_attribute_bound_to_the_wrong_object_fails_binding():
  # Colours exchanged between the two objects: a green circle under a red square.
  r = _perfect(PROMPTS)
  r["color"][3] = r["color"][3, ::-1]
  m = caption_metrics.compute(r, PROMPTS)
  assert m["binding_accuracy"] == 0.5 and m["objects_accuracy"] == 0.5


def test_heldout_split_and_empty_subsets():
  prompts = PROMPTS + [Scene((ObjectSpec("red", "triangle", "small", "left"),))]  # a heldout pair
  r = _perfect(prompts)
  r["shape"][4, 0] = 0  # the heldout red triangle drawn as a red circle
  assert list(caption_metrics.heldout_mask(prompts)) == [False, False, False, False, True]
  m = caption_metrics.compute_with_heldout(r, prompts)
  assert m["heldout_caption_accuracy"] == 0.0 and m["seen_caption_accuracy"] == 1.0
  assert m["caption_accuracy"] == pytest.approx(2 / 3)
  assert m["heldout_num_two_object"] == 0.0 and math.isnan(m["heldout_binding_accuracy"])
  empty = caption_metrics.compute({k: v[:0] for k, v in r.items()}, [])
  assert all(math.isnan(empty[k]) for k in caption_metrics.METRICS) and empty["num_prompts"] == 0.0


def test_mismatched_readings_raise():
  r = _perfect(PROMPTS)
  with pytest.raises(ValueError, match="one image per prompt"):
    caption_metrics.compute(r, PROMPTS[:3])
  del r["orientation"]
  with pytest.raises(ValueError, match="oracle.read"):
    caption_metrics.compute(r, PROMPTS)


def test_oracle_readings_of_renders_score_high():
  # End to end on a handful of renders of the prompts themselves.
  module, params = oracle.load_oracle()
  images = np.stack([shapes.render(s.objects, s.relation, 32) for s in PROMPTS])
  m = caption_metrics.compute(oracle.read(module, params, images), PROMPTS)
  assert m["caption_accuracy"] == 1.0 and m["binding_accuracy"] == 1.0, m
