"""Captioned shapes: determinism, colours, anti-aliasing, geometry, captions and splits.

Geometry is measured from the pixels alone: an object's coverage at a pixel is
recovered by projecting the pixel onto the segment background -> object colour,
so areas, centroids and bounding boxes come out in (sub)pixel units.
"""

import itertools
import math

import numpy as np
import pytest

from t2i_jax.data import captions, shapes
from t2i_jax.data.captions import ObjectSpec, Scene

BG = np.array(shapes.BACKGROUND_RGB, np.float64)
# Exact areas in units of half-size^2 (circle r = 1, square half 0.85, triangle
# base 2 x height 1.75, five-pointed star R = 1 with inner radius 0.45, plus
# sign with arms 2 x 0.8) and bounding-box widths x heights.
AREAS = {"circle": math.pi, "square": 1.7 ** 2, "triangle": 1.75, "star": 5 * 0.45 * math.sin(math.radians(36)),
         "cross": 2 * 2 * 0.8 - 0.8 ** 2}
BOXES = {"circle": 4.0, "square": 1.7 ** 2, "triangle": 2 * 1.75,
         "star": 2 * math.sin(math.radians(72)) * (1 + math.cos(math.radians(36))), "cross": 4.0}


def coverage(image, color):
  """Per-pixel coverage [H, W] of an object of COLORS id `color` over the background."""
  d = np.array(shapes.COLOR_RGB[color], np.float64) - BG
  return np.clip((image.astype(np.float64) - BG) @ d / (d @ d), 0.0, 1.0)


def owned_coverage(image, scene, k):
  """Coverage of object k, counting only pixels nearer its colour line than the other object's."""
  def fit(o):
    d = np.array(shapes.COLOR_RGB[o.color], np.float64) - BG
    t = np.clip((image.astype(np.float64) - BG) @ d / (d @ d), 0.0, 1.0)
    return t, np.linalg.norm(image - BG - t[..., None] * d, axis=-1)
  (t, res), others = fit(scene.objects[k]), [fit(o) for j, o in enumerate(scene.objects) if j != k]
  return np.where(np.all([res <= r for _, r in others], axis=0), t, 0.0) if others else t


def centroid(alpha):
  """(x, y) in pixels, pixel i centred at i + 0.5."""
  ys, xs = np.mgrid[:alpha.shape[0], :alpha.shape[1]] + 0.5
  return np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()


def variants(scene):
  """Every caption the templates and synonyms allow for `scene`, with its labels."""
  out = {}
  def phrase(o, sw, hw):
    words = f"{sw} {o.color_name} {hw}"
    return ("an " if words[0] in "aeiou" else "a ") + words
  objs = scene.objects
  words = [itertools.product(captions.SIZE_WORDS[o.size], captions.SHAPE_WORDS[o.shape]) for o in objs]
  if len(objs) == 1:
    for (t, tmpl), (sw, hw), pos in itertools.product(
        enumerate(captions.SINGLE_TEMPLATES), words[0], captions.POSITION_PHRASES[objs[0].position]):
      out[tmpl.format(obj=phrase(objs[0], sw, hw), pos=pos)] = (("single", t), sw, hw, pos)
  else:
    for (t, tmpl), (sw0, hw0), (sw1, hw1), rel in itertools.product(
        enumerate(captions.PAIR_TEMPLATES), words[0], words[1], captions.RELATION_PHRASES[scene.relation]):
      cap = tmpl.format(obj0=phrase(objs[0], sw0, hw0), obj1=phrase(objs[1], sw1, hw1), rel=rel)
      out[cap] = (("pair", t), sw0, hw0, sw1, hw1, rel)
  return out


@pytest.fixture(scope="module")
def train_batch():
  return shapes.render_batch("train", 7, 0, 600, 32)


def test_same_seed_and_index_give_identical_bytes_and_caption():
  a, b = shapes.sample_example("train", 3, 41), shapes.sample_example("train", 3, 41)
  assert a.image.dtype == np.uint8 and a.image.shape == (32, 32, 3)
  assert a.image.tobytes() == b.image.tobytes() and a.caption == b.caption and a.objects == b.objects
  others = [shapes.sample_example("train", 3, 42), shapes.sample_example("train", 4, 41),
            shapes.sample_example("test", 3, 41)]
  for o in others:
    assert o.image.tobytes() != a.image.tobytes() and o.caption != a.caption
  # The batch path draws and paints exactly what the one-example path does.
  images, caps, scenes = shapes.render_batch("train", 3, 40, 3, 32)
  assert images[1].tobytes() == a.image.tobytes() and caps[1] == a.caption and scenes[1] == a.scene
  assert shapes.sample_scene("train", 3, 41) == (a.scene, a.caption)


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_interior_pixels_hold_the_exact_rgb(shape):
  for color, rgb in zip(shapes.COLORS, shapes.COLOR_RGB):
    image = shapes.render([ObjectSpec(color, shape, "large", "center")], None, 32)
    assert tuple(image[16, 16]) == rgb  # the object's centre is the corner of pixels 15 and 16
    assert tuple(image[0, 0]) == shapes.BACKGROUND_RGB


def test_sampled_objects_have_their_colour_at_the_centre(train_batch):
  images, _, scenes = train_batch
  checked = 0
  for image, scene in zip(images, scenes):
    for o in scene.objects:
      if o.size == 1:
        x, y = (np.array(o.center) * 32).astype(int)
        assert tuple(image[y, x]) == shapes.COLOR_RGB[o.color], (scene, image[y, x])
        checked += 1
  assert checked > 300


def test_edges_are_anti_aliased_blends(train_batch):
  images, _, scenes = train_batch
  curved = 0
  for image, scene in zip(images[:200], scenes[:200]):
    alphas = [owned_coverage(image, scene, k) for k in range(len(scene.objects))]
    alpha = np.max(alphas, axis=0)
    # Even a square's edges almost never fall on pixel boundaries.
    assert ((alpha > 0.02) & (alpha < 0.98)).sum() >= 2, scene
    for a, o in zip(alphas, scene.objects):
      if o.shape_name in ("square", "cross"):
        continue  # axis-aligned edges can sit close to pixel boundaries
      # Curved and slanted edges cross pixels everywhere: many partial pixels,
      # each a mix of background and object colour, nothing else.
      mix = BG + a[..., None] * (np.array(shapes.COLOR_RGB[o.color]) - BG)
      partial = (a > 0.1) & (a < 0.9)
      assert partial.sum() >= 6 and (np.abs(image - mix).max(-1)[partial] <= 1.0).mean() > 0.9, scene
      curved += 1
  assert curved > 150


@pytest.mark.parametrize("image_size", [32, 64])
def test_areas_match_the_geometry_and_sizes_differ(image_size):
  for shape in shapes.SHAPES:
    areas = []
    for size, scale in enumerate(shapes.SIZE_SCALES):
      image = shapes.render([ObjectSpec("green", shape, size, "center")], None, image_size)
      areas.append(coverage(image, 1).sum())
      expected = AREAS[shape] * (scale * image_size) ** 2
      assert areas[-1] == pytest.approx(expected, rel=0.02), (shape, size)
    assert areas[1] / areas[0] == pytest.approx((0.18 / 0.11) ** 2, rel=0.03)


def test_shapes_differ_in_bounding_box_fill():
  """Fill = area / box, with the box from the pixels' row and column profiles (large objects)."""
  for image_size, tolerance, min_gap in ((64, 0.08, 0.07), (32, 0.14, 0.04)):
    fills = {}
    for shape in shapes.SHAPES:
      alpha = coverage(shapes.render([ObjectSpec("yellow", shape, "large", "center")], None, image_size), 3)
      fills[shape] = alpha.sum() / (alpha.max(0).sum() * alpha.max(1).sum())
      # Sharp tips (star, triangle apex) lose up to a pixel of box, so the fill reads high.
      assert fills[shape] == pytest.approx(AREAS[shape] / BOXES[shape], abs=tolerance), (image_size, shape)
    assert min(np.diff(sorted(fills.values()))) > min_gap, fills
    assert sorted(fills, key=fills.get) == ["star", "triangle", "cross", "circle", "square"]


def test_single_object_centroid_lies_in_its_named_region(train_batch):
  images, _, scenes = train_batch
  checked = 0
  for image, scene in zip(images, scenes):
    if len(scene.objects) != 1:
      continue
    o = scene.objects[0]
    c = centroid(coverage(image, o.color))
    row, col = divmod(o.position, 3)
    assert (int(c[0] // (32 / 3)), int(c[1] // (32 / 3))) == (col, row), (o, c)
    # The centroid is the laid-out centre (the triangle's sits 1/6 half-size lower).
    drop = (TRIANGLE_CENTROID if o.shape_name == "triangle" else 0.0) * shapes.SIZE_SCALES[o.size] * 32
    np.testing.assert_allclose(c, np.array(o.center) * 32 + [0, drop], atol=0.1)
    checked += 1
  assert checked > 250


TRIANGLE_CENTROID = (-1.0 + 2 * 0.75) / 3


def test_two_objects_satisfy_their_relation_unambiguously(train_batch):
  images, _, scenes = train_batch
  checked = set()
  for image, scene in zip(images, scenes):
    a, b = scene.objects if len(scene.objects) == 2 else (None, None)
    if a is None or a.color == b.color:
      continue  # same colour: the pixels alone cannot say which object is which
    ca, cb = centroid(owned_coverage(image, scene, 0)), centroid(owned_coverage(image, scene, 1))
    dx, dy = ca - cb
    along, across = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[
        scene.relation_name]
    # Centres are >= 0.4 of the image apart along the axis and <= 0.1 across it; a
    # triangle's centroid sits up to 1 px below its centre at 32 px.
    assert along > 0.36 * 32 and abs(across) < 0.12 * 32, (scene, ca, cb)
    checked.add(scene.relation_name)
  assert checked == set(shapes.RELATIONS)


def test_captions_say_exactly_the_structure_and_use_every_phrasing():
  seen = set()
  for i in range(1500):
    scene, caption = shapes.sample_scene("train", 11, i)
    options = variants(scene)
    assert caption in options, (caption, scene)
    for name in shapes.COLORS:  # no colour that is not in the scene
      assert (name in caption.split()) == any(o.color_name == name for o in scene.objects), caption
    seen.update(options[caption])
  expected = {("single", t) for t in range(len(captions.SINGLE_TEMPLATES))}
  expected |= {("pair", t) for t in range(len(captions.PAIR_TEMPLATES))}
  for table in (captions.SIZE_WORDS, captions.SHAPE_WORDS, captions.POSITION_PHRASES,
                captions.RELATION_PHRASES):
    expected |= {w for words in table for w in words}
  assert expected <= seen, expected - seen


def test_caption_for_builds_prompts_from_a_structure():
  scene = Scene((ObjectSpec("blue", "square", "small"), ObjectSpec("yellow", "triangle", "large")), "left of")
  assert captions.caption_for(scene) == "a small blue square to the left of a large yellow triangle"
  single = Scene((ObjectSpec("green", "star", "large", "bottom right"),))
  assert shapes.caption_for(single) == "a large green star at the bottom right"
  drawn = [shapes.caption_for(scene, np.random.default_rng(5)) for _ in range(2)]
  assert drawn[0] == drawn[1] and drawn[0] in variants(scene)
  assert shapes.caption_for(scene, 123) == shapes.caption_for(scene, 123)
  example = shapes.sample_example("heldout", 0, 3)
  assert shapes.caption_for(example, 9) in variants(example.scene)
  assert example.scene.as_dict()["objects"][0]["color_name"] == example.objects[0].color_name


def test_heldout_pairs_never_in_train_and_always_in_heldout():
  pairs = {(shapes.COLORS.index(c), shapes.SHAPES.index(s)) for c, s in shapes.HELDOUT_PAIRS}
  assert pairs == {(0, 2), (2, 0)}  # red triangle, blue circle
  counts = {}
  for split, n in (("train", 3000), ("test", 1000), ("heldout", 1000)):
    for i in range(n):
      scene, _ = shapes.sample_scene(split, 0, i)
      hits = sum((o.color, o.shape) in pairs for o in scene.objects)
      assert hits == (1 if split == "heldout" else 0), (split, i, scene)
      for o in scene.objects:
        counts[split, o.color, o.shape] = counts.get((split, o.color, o.shape), 0) + 1
  # Train still sees every other colour-shape pair, and each held-out colour and shape on its own.
  train_pairs = {(c, s) for split, c, s in counts if split == "train"}
  assert len(train_pairs) == 28 and not train_pairs & pairs
  assert {(c, s) for split, c, s in counts if split == "heldout"} >= pairs


@pytest.mark.parametrize("image_size", [16, 64])
def test_other_image_sizes(image_size):
  ex = shapes.sample_example("heldout", 1, 2, image_size=image_size)
  assert ex.image.shape == (image_size, image_size, 3) and ex.image.dtype == np.uint8
  images, _, _ = shapes.render_batch("train", 1, 0, 20, image_size)
  assert images.shape == (20, image_size, image_size, 3)
  floats = shapes.to_float(images)
  assert floats.dtype == np.float32 and -1.0 <= floats.min() < floats.max() <= 1.0
  # Same structure, scaled: relative coverage is size independent to a few percent.
  scene = ex.scene
  cover = coverage(shapes.render(scene.objects, scene.relation, image_size), scene.objects[0].color).sum()
  expected = AREAS[scene.objects[0].shape_name] * (shapes.SIZE_SCALES[scene.objects[0].size] * image_size) ** 2
  assert cover == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=15), "16 to 64"),
    (dict(image_size=65), "16 to 64"),
    (dict(image_size=32.0), "16 to 64"),
    (dict(split="validation"), "'train', 'test', 'heldout'"),
    (dict(index=-1), "non-negative"),
    (dict(seed="0"), "non-negative"),
])
def test_bad_arguments_raise_helpful_errors(kwargs, message):
  args = dict(split="train", seed=0, index=0, image_size=32) | kwargs
  with pytest.raises(ValueError, match=message):
    shapes.sample_example(**args)


def test_bad_structures_raise_helpful_errors():
  with pytest.raises(ValueError, match="'red', 'green'"):
    ObjectSpec("pink", "circle", "small")
  with pytest.raises(ValueError, match="ids run 0..4"):
    ObjectSpec(0, 5, 0)
  with pytest.raises(ValueError, match="needs a relation"):
    Scene((ObjectSpec(0, 0, 0), ObjectSpec(1, 1, 1)))
  with pytest.raises(ValueError, match="needs two objects"):
    Scene((ObjectSpec(0, 0, 0, "top"),), "above")
  with pytest.raises(ValueError, match="position"):
    Scene((ObjectSpec(0, 0, 0),))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    ObjectSpec(0, 0, 0, center=(1.2, 0.5))
  with pytest.raises(ValueError, match="16 to 64"):
    shapes.render([ObjectSpec(0, 0, 0, "top")], None, 8)


def test_render_honours_explicit_centres_and_layout_jitter():
  obj = ObjectSpec("purple", "circle", "large", center=(0.3, 0.6))
  c = centroid(coverage(shapes.render([obj], None, 64), 4))
  np.testing.assert_allclose(c, [0.3 * 64, 0.6 * 64], atol=0.05)
  scene = Scene((ObjectSpec("red", "square", 0, "top"),))
  assert shapes.layout(scene).objects[0].center == (0.5, 0.23)
  jittered = shapes.layout(scene, np.random.default_rng(0)).objects[0].center
  assert jittered != (0.5, 0.23) and abs(jittered[0] - 0.5) <= 0.04 and abs(jittered[1] - 0.23) <= 0.04
