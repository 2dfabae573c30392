"""Random inpainting masks: boxes are rectangles of the asked sides, strokes follow their segments, the mix
follows box_fraction, and bad settings are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.data import masks


def _hole_extent(mask):
  """(rows, cols) spanned by the hole (mask 0) of one [H, W, 1] mask, and whether the hole fills that box."""
  hole = np.asarray(mask)[..., 0] == 0
  rows, cols = np.where(hole.any(1))[0], np.where(hole.any(0))[0]
  span = hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  return len(rows), len(cols), bool(span.all())


# The drawers are jitted whole (with their sizes and settings static), as the train step runs them: op by op
# each dispatches (and compiles) dozens of ops.
def test_box_masks_are_filled_rectangles_of_the_asked_sides():
  size, low, high = 24, 0.25, 0.5
  box_masks = jax.jit(masks.box_masks, static_argnums=(1, 2, 3, 4))
  boxes = np.asarray(box_masks(jax.random.PRNGKey(0), 200, size, low, high))
  assert boxes.shape == (200, size, size, 1) and set(np.unique(boxes)) == {0.0, 1.0}
  extents = np.asarray([_hole_extent(m) for m in boxes])
  assert extents[:, 2].all()  # every hole is one solid rectangle
  # A side of s·size pixels covers floor or ceil of it: 6..12 pixels at 24 px.
  assert extents[:, :2].min() >= int(low * size) and extents[:, :2].max() <= int(high * size) + 1
  assert extents[:, :2].std() > 1.0  # sides vary
  np.testing.assert_array_equal(boxes, box_masks(jax.random.PRNGKey(0), 200, size, low, high))


def test_segment_distance_against_hand_values():
  points = jnp.asarray([[0.0, 0.0], [0.5, 1.0], [2.0, 0.0], [1.0, -3.0]])
  start, end = jnp.asarray([0.0, 0.0]), jnp.asarray([1.0, 0.0])
  # On the segment; above its middle; past its end; below its end (clamped to the endpoint).
  np.testing.assert_allclose(masks.segment_distance(points, start, end), [0.0, 1.0, 1.0, 3.0], atol=1e-6)


def test_strokes_cover_their_segments_and_only_near_them():
  settings = masks.MaskSettings(max_strokes=1, stroke_vertices=2, stroke_width_min=0.1, stroke_width_max=0.1)
  size = 32
  more = masks.MaskSettings(max_strokes=4)
  strokes, many = map(np.asarray, jax.jit(lambda key: [masks.stroke_masks(key, 64, size, s) for s in (settings, more)])(
      jax.random.PRNGKey(3)))
  assert set(np.unique(strokes)) == {0.0, 1.0}
  holes = (strokes[..., 0] == 0).sum((1, 2))
  # One segment of length ≥ 0.15 of the side, 0.1 wide: at least ~0.015 of the image, never more than
  # its full length (0.3) times its width plus the round caps.
  assert holes.min() >= 0.01 * size * size and holes.max() <= (0.3 * 0.1 + np.pi * 0.05 ** 2) * size * size + 2 * size
  assert (many[..., 0] == 0).sum((1, 2)).mean() > holes.mean()


def test_random_masks_mix_boxes_and_strokes_as_asked():
  size, fractions = 24, (0.0, 1.0, 0.5)
  mixes = jax.jit(lambda key: [masks.random_masks(key, 400, size, masks.MaskSettings(box_fraction=fraction))
                               for fraction in fractions])(jax.random.PRNGKey(1))
  for fraction, drawn in zip(fractions, map(np.asarray, mixes)):
    solid = np.asarray([_hole_extent(m)[2] for m in drawn])
    if fraction == 1.0:
      assert solid.all()
    elif fraction == 0.0:
      assert solid.mean() < 0.2  # a stroke is rarely one solid rectangle
    else:
      assert 0.45 < solid.mean() < 0.7  # the boxes, plus the few strokes that happen to be rectangles


@pytest.mark.parametrize("bad, message", [
    (dict(box_fraction=1.5), "box_fraction"),
    (dict(box_min=0.7, box_max=0.5), "may not exceed"),
    (dict(max_strokes=0), "max_strokes"),
    (dict(stroke_vertices=1), "stroke_vertices"),
])
def test_bad_mask_settings_are_refused(bad, message):
  with pytest.raises(ValueError, match=message):
    masks.MaskSettings(**bad)
