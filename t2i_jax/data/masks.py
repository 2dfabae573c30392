"""Random inpainting masks for training an inpainting model (GLIDE §3.4): boxes and free-form strokes.

GLIDE fine-tuned its inpainting model by erasing random regions of the training images and feeding the
rest, with the mask, as extra input channels. The masks here are drawn on the devices inside the train
step from an explicit key (so a resumed run draws the same ones), half of them rectangles and half
free-form brush strokes (polylines of thick segments, as the free-form masks of DeepFill v2 and LaMa).

A mask is float32 [B, H, W, 1]: 1 on the known pixels, 0 on the region to fill, the convention of
the core's `guidance.paste_known` and of the U-Net's `inpaint_mask` input. Lengths are fractions of the
image side, so one setting serves every image size.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MaskSettings:
  """How training masks are drawn (the config's `inpaint` section).

  Attributes:
    box_fraction: the share of examples masked by a box; the rest by strokes.
    box_min, box_max: each side of a box ~ U[box_min, box_max] of the image side.
    max_strokes: an example's stroke count ~ U{1, …, max_strokes}.
    stroke_vertices: points per stroke (a polyline of stroke_vertices − 1 segments).
    stroke_step: each segment's length ~ U[stroke_step / 2, stroke_step] of the side, in a random direction.
    stroke_width_min, stroke_width_max: a stroke's width ~ U[min, max] of the side.
  """
  box_fraction: float = 0.5
  box_min: float = 0.25
  box_max: float = 0.6
  max_strokes: int = 3
  stroke_vertices: int = 4
  stroke_step: float = 0.3
  stroke_width_min: float = 0.08
  stroke_width_max: float = 0.2

  def __post_init__(self):
    for name in ("box_fraction", "box_min", "box_max", "stroke_step", "stroke_width_min", "stroke_width_max"):
      value = getattr(self, name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"inpaint.{name}={value!r} must lie in [0, 1] (a share, or a fraction of the side).")
    if self.box_min > self.box_max or self.stroke_width_min > self.stroke_width_max:
      raise ValueError(f"inpaint: box_min={self.box_min} and stroke_width_min={self.stroke_width_min} may not "
                       "exceed their maxima (box_max, stroke_width_max).")
    for name in ("max_strokes", "stroke_vertices"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "max_strokes" else 2):
        raise ValueError(f"inpaint.{name}={value!r} must be an int of at least "
                         f"{1 if name == 'max_strokes' else 2}.")


def pixel_centers(size: int) -> jax.Array:
  """float32 [size] pixel-centre coordinates in fractions of the side: (i + 0.5) / size."""
  return (jnp.arange(size, dtype=jnp.float32) + 0.5) / size


def box_masks(key: jax.Array, batch: int, size: int, box_min: float, box_max: float) -> jax.Array:
  """[batch, size, size, 1] masks, each 0 inside one random axis-aligned box that lies within the image."""
  side_key, corner_key = jax.random.split(key)
  sides = jax.random.uniform(side_key, (batch, 2), minval=box_min, maxval=box_max)  # (height, width)
  corners = jax.random.uniform(corner_key, (batch, 2)) * (1.0 - sides)  # (top, left)
  centers = pixel_centers(size)
  inside_rows = (centers[None] >= corners[:, :1]) & (centers[None] < corners[:, :1] + sides[:, :1])  # [B, H]
  inside_cols = (centers[None] >= corners[:, 1:]) & (centers[None] < corners[:, 1:] + sides[:, 1:])  # [B, W]
  hole = inside_rows[:, :, None] & inside_cols[:, None, :]
  return (~hole).astype(jnp.float32)[..., None]


def segment_distance(points: jax.Array, start: jax.Array, end: jax.Array) -> jax.Array:
  """Euclidean distance of points [P, 2] to segments start, end [..., 2]: [..., P]."""
  direction = end - start
  length2 = jnp.maximum(jnp.sum(direction ** 2, -1, keepdims=True), 1e-12)
  rel = points - start[..., None, :]  # [..., P, 2]
  along = jnp.clip(jnp.sum(rel * direction[..., None, :], -1) / length2, 0.0, 1.0)
  return jnp.linalg.norm(rel - along[..., None] * direction[..., None, :], axis=-1)


def stroke_masks(key: jax.Array, batch: int, size: int, settings: MaskSettings) -> jax.Array:
  """[batch, size, size, 1] masks, each 0 under 1..max_strokes random thick polylines."""
  count_key, start_key, angle_key, step_key, width_key = jax.random.split(key, 5)
  strokes, segments = settings.max_strokes, settings.stroke_vertices - 1
  starts = jax.random.uniform(start_key, (batch, strokes, 1, 2))
  angles = jax.random.uniform(angle_key, (batch, strokes, segments), maxval=2 * jnp.pi)
  steps = jax.random.uniform(step_key, (batch, strokes, segments), minval=settings.stroke_step / 2,
                             maxval=settings.stroke_step)
  moves = steps[..., None] * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
  vertices = jnp.clip(jnp.concatenate([starts, starts + jnp.cumsum(moves, axis=2)], axis=2), 0.0, 1.0)
  centers = pixel_centers(size)
  points = jnp.stack(jnp.meshgrid(centers, centers, indexing="ij"), -1).reshape(-1, 2)  # (row, col)
  distance = segment_distance(points, vertices[:, :, :-1], vertices[:, :, 1:]).min(axis=2)  # [B, strokes, P]
  widths = jax.random.uniform(width_key, (batch, strokes, 1), minval=settings.stroke_width_min,
                              maxval=settings.stroke_width_max)
  used = jnp.arange(strokes)[None] < jax.random.randint(count_key, (batch, 1), 1, strokes + 1)
  under = jnp.any((distance <= widths / 2) & used[..., None], axis=1)  # [B, P]
  return (~under).astype(jnp.float32).reshape(batch, size, size, 1)


def random_masks(key: jax.Array, batch: int, size: int, settings: MaskSettings) -> jax.Array:
  """[batch, size, size, 1] training masks: a box with probability settings.box_fraction, else strokes."""
  choice_key, box_key, stroke_key = jax.random.split(key, 3)
  boxes = box_masks(box_key, batch, size, settings.box_min, settings.box_max)
  strokes = stroke_masks(stroke_key, batch, size, settings)
  use_box = jax.random.uniform(choice_key, (batch, 1, 1, 1)) < settings.box_fraction
  return jnp.where(use_box, boxes, strokes)
