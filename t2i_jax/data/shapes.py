"""Captioned shapes: the embedded default dataset, rendered procedurally in numpy.

An example is one object at one of nine grid positions, or two objects in a
spatial relation, on a dark grey background, with an English caption and the
structured ground truth beside it (see `captions.py` for the words).

Rendering: each shape is a signed distance function in units of its half-size;
it is evaluated on a SUPERSAMPLE x SUPERSAMPLE grid per pixel, turned into
per-sample coverage with a one-sample-wide ramp and box-filtered down, so edges
are anti-aliased and interiors hold the exact RGB value. Images are uint8
[H, W, 3]; `to_float` maps them to float32 in [-1, 1] for a model.

Everything is deterministic in (split, seed, index): an example's randomness is
one vector of uniforms from `np.random.default_rng(SeedSequence([seed, split id,
index]))`, so any index can be rendered alone, in any order, on any host.

Splits: "train" and "test" share one distribution (different seed streams);
"heldout" puts one object with a colour-shape pair from HELDOUT_PAIRS in every
example, and those pairs never occur in train or test, to measure
compositional generalisation.
"""

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from t2i_jax.data import captions
from t2i_jax.data.captions import (COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, ObjectSpec, Scene,
                                   caption_for)

# Well separated hues at similar brightness, all far from the background.
COLOR_RGB = ((220, 40, 40), (40, 175, 70), (40, 90, 230), (240, 215, 50), (155, 70, 210), (250, 140, 20))
BACKGROUND_RGB = (56, 56, 56)
# Half-size of an object's bounding square as a fraction of the image side; the
# area ratio large/small is (0.18 / 0.11)^2 = 2.7.
SIZE_SCALES = (0.11, 0.18)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 64
SUPERSAMPLE = 4
SPLITS = ("train", "test", "heldout")
HELDOUT_PAIRS = (("red", "triangle"), ("blue", "circle"))

# Position centres per grid column / row. With jitter +-0.04 and the largest
# half-size 0.18 an object stays inside the image, and its centroid (the
# triangle's sits 0.17 half-sizes below its box centre) stays inside its third.
POSITION_GRID = (0.23, 0.5, 0.77)
POSITION_JITTER = 0.04
# Two objects: half the separation along the relation's axis, the pair's
# midpoint on that axis, the common coordinate on the other axis and each
# object's offset from it. Separation >= 0.4 > 2 * 0.18 keeps them apart;
# cross-axis offsets differ by <= 0.1, a quarter of the separation, so
# "left of" is never also "above".
PAIR_HALF_SEPARATION = (0.2, 0.25)
PAIR_MIDPOINT = (0.45, 0.55)
PAIR_CROSS = (0.3, 0.7)
PAIR_CROSS_OFFSET = 0.05

# Shape geometry (unit half-size): square half-side, cross arm half-width,
# star inner radius (outer radius 1), triangle base height (apex at y = -1).
SQUARE_HALF = 0.85
CROSS_ARM = 0.4
STAR_INNER = 0.45
TRIANGLE_BASE = 0.75

_HELDOUT_IDS = tuple((COLORS.index(c), SHAPES.index(s)) for c, s in HELDOUT_PAIRS)
_ALL_PAIRS = tuple((c, s) for c in range(len(COLORS)) for s in range(len(SHAPES)))
_TRAIN_PAIRS = tuple(p for p in _ALL_PAIRS if p not in _HELDOUT_IDS)
_NUM_UNIFORMS = 12 + captions.NUM_CAPTION_UNIFORMS


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
  """One rendered example.

  Attributes:
    image: uint8 [image_size, image_size, 3].
    caption: the English caption.
    objects: tuple of ObjectSpec (ids, names as properties, centres filled in).
    relation: id into RELATIONS for two objects, else None.
    template: id into captions.SINGLE_TEMPLATES or captions.PAIR_TEMPLATES.
    split, seed, index: what produced it.
  """
  image: np.ndarray
  caption: str
  objects: Tuple[ObjectSpec, ...]
  relation: Optional[int]
  template: int
  split: str
  seed: int
  index: int

  @property
  def scene(self) -> Scene:
    return Scene(self.objects, self.relation)

  @property
  def relation_name(self) -> Optional[str]:
    return None if self.relation is None else RELATIONS[self.relation]


def _check_split(split) -> int:
  if split not in SPLITS:
    raise ValueError(f"split={split!r} is not a captioned-shapes split; use one of {', '.join(map(repr, SPLITS))}.")
  return SPLITS.index(split)


def _check_image_size(image_size) -> int:
  if (isinstance(image_size, (bool, np.bool_)) or not isinstance(image_size, (int, np.integer))
      or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
    raise ValueError(
        f"image_size={image_size!r} is not supported: the shapes renderer draws square images of "
        f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels (below {MIN_IMAGE_SIZE} small shapes are no longer "
        f"distinguishable); render at a size in that range and resize if you need another.")
  return int(image_size)


def _check_count(name: str, value) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{name}={value!r} must be a non-negative integer.")
  return int(value)


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 images [..., H, W, 3] -> float32 in [-1, 1], the range the diffusion models use."""
  return np.asarray(images, np.float32) / 127.5 - 1.0


# ----------------------------------------------------------------------------
# Layout.


def _lerp(bounds: Tuple[float, float], u: Optional[float]) -> float:
  return 0.5 * (bounds[0] + bounds[1]) if u is None else bounds[0] + (bounds[1] - bounds[0]) * u


def _layout(scene: Scene, u: Optional[Sequence[float]]) -> Scene:
  u = [None] * 5 if u is None else list(u)
  objs = scene.objects
  if len(objs) == 1:
    row, col = divmod(objs[0].position if objs[0].position is not None else 4, 3)
    jit = [0.0 if x is None else POSITION_JITTER * (2 * x - 1) for x in u[:2]]
    centers = [(POSITION_GRID[col] + jit[0], POSITION_GRID[row] + jit[1])]
  else:
    mid, half = _lerp(PAIR_MIDPOINT, u[0]), _lerp(PAIR_HALF_SEPARATION, u[1])
    cross = _lerp(PAIR_CROSS, u[2])
    off = [0.0 if x is None else PAIR_CROSS_OFFSET * (2 * x - 1) for x in u[3:5]]
    # Along the axis: objects[0] first for "left of"/"above", second otherwise.
    sign = -1.0 if scene.relation in (0, 2) else 1.0
    along = (mid + sign * half, mid - sign * half)
    horizontal = scene.relation in (0, 1)
    centers = [(a, cross + o) if horizontal else (cross + o, a) for a, o in zip(along, off)]
  placed = tuple(o if o.center is not None else dataclasses.replace(o, center=c) for o, c in zip(objs, centers))
  return Scene(placed, scene.relation)


def layout(scene: Scene, rng: Optional[np.random.Generator] = None) -> Scene:
  """The scene with every object's `center` filled in (centres already set are kept).

  One object sits at its grid position, two objects as their relation says.
  With `rng` the centres are jittered as in the dataset; without, they are
  the canonical (unjittered) ones.
  """
  return _layout(scene, None if rng is None else np.random.default_rng(rng).random(5))


# ----------------------------------------------------------------------------
# Signed distance functions: u to the right, v down, both in units of the
# object's half-size; negative inside.


def _sd_circle(u, v):
  return np.sqrt(u * u + v * v) - 1.0


def _sd_square(u, v):
  # Exact inside and along the sides; it underestimates only beyond the
  # corners, by less than the ramp there.
  return np.maximum(np.abs(u), np.abs(v)) - SQUARE_HALF


def _sd_triangle(u, v):
  # Apex (0, -1), base corners (+-1, TRIANGLE_BASE); the slanted sides fold into one with |u|.
  h = 1.0 + TRIANGLE_BASE
  return np.maximum(v - TRIANGLE_BASE, (h * np.abs(u) - v - 1.0) / math.hypot(h, 1.0))


def _sd_cross(u, v):
  au, av = np.abs(u), np.abs(v)
  return np.minimum(np.maximum(au - 1.0, av - CROSS_ARM), np.maximum(au - CROSS_ARM, av - 1.0))


def _sd_star(u, v):
  # Inigo Quilez's exact five-pointed star: fold into one of ten symmetric
  # wedges by reflections, then measure to the one edge left there.
  k1x, k1y = 0.809016994375, -0.587785252292
  x, y = np.abs(u), -v  # y up, point at the top
  d = np.maximum(k1x * x + k1y * y, 0.0)
  x, y = x - 2 * d * k1x, y - 2 * d * k1y
  d = np.maximum(-k1x * x + k1y * y, 0.0)
  x, y = np.abs(x + 2 * d * k1x), y - 2 * d * k1y - 1.0
  bx, by = -STAR_INNER * k1y, STAR_INNER * k1x - 1.0
  h = np.clip((x * bx + y * by) / (bx * bx + by * by), 0.0, 1.0)
  return np.sqrt((x - bx * h) ** 2 + (y - by * h) ** 2) * np.sign(y * bx - x * by)


_SDFS = (_sd_circle, _sd_square, _sd_triangle, _sd_star, _sd_cross)
assert len(_SDFS) == len(SHAPES)


def _window_size(image_size: int) -> int:
  # Pixels per side of the square window that holds the largest object with a margin.
  return 2 * math.ceil(max(SIZE_SCALES) * image_size) + 2


def _render_scenes(scenes: Sequence[Scene], image_size: int) -> np.ndarray:
  """Laid-out scenes -> uint8 [N, S, S, 3], all objects of a shape at once."""
  n, s, ss = len(scenes), image_size, SUPERSAMPLE
  win = _window_size(s)
  pad = win  # every window fits inside the padded canvas, even at the image border
  canvas = np.empty((n, s + 2 * pad, s + 2 * pad, 3), np.float32)
  canvas[...] = BACKGROUND_RGB
  objs = [(i, slot, o) for i, sc in enumerate(scenes) for slot, o in enumerate(sc.objects)]
  scene_id = np.array([i for i, _, _ in objs])
  slot = np.array([k for _, k, _ in objs])
  shape = np.array([o.shape for _, _, o in objs])
  rgb = np.array([COLOR_RGB[o.color] for _, _, o in objs], np.float32)
  half = np.array([SIZE_SCALES[o.size] * s for _, _, o in objs], np.float32)
  center = np.array([o.center for _, _, o in objs], np.float32).reshape(-1, 2) * s  # pixels, [M, (x, y)]
  origin = np.floor(center).astype(np.int64) - win // 2  # window's top-left pixel, [M, (x, y)]
  # Sample positions in pixel units relative to the window origin (pixel i spans [i, i+1)).
  offsets = (np.arange(win * ss, dtype=np.float32) + 0.5) / ss
  alpha = np.empty((len(objs), win, win), np.float32)
  for k, sdf in enumerate(_SDFS):
    idx = np.nonzero(shape == k)[0]
    if idx.size == 0:
      continue
    h = half[idx, None, None]
    u = (origin[idx, 0, None, None] + offsets[None, None, :] - center[idx, 0, None, None]) / h
    v = (origin[idx, 1, None, None] + offsets[None, :, None] - center[idx, 1, None, None]) / h
    # Coverage per sample ramps over one sample width around the edge.
    cover = np.clip(0.5 - sdf(u, v) * h * ss, 0.0, 1.0)
    alpha[idx] = cover.reshape(idx.size, win, ss, win, ss).mean(axis=(2, 4))
  steps = np.arange(win)
  for k in (0, 1):  # paint in object order; within one slot no two windows share an image
    idx = np.nonzero(slot == k)[0]
    if idx.size == 0:
      continue
    rows = (origin[idx, 1, None] + pad + steps)[:, :, None]
    cols = (origin[idx, 0, None] + pad + steps)[:, None, :]
    sel = (scene_id[idx, None, None], rows, cols)
    a = alpha[idx, :, :, None]
    canvas[sel] = canvas[sel] * (1.0 - a) + rgb[idx, None, None, :] * a
  out = canvas[:, pad:pad + s, pad:pad + s]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render(objects: Sequence[ObjectSpec], relation=None, image_size: int = 32,
           rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """Renders a given structure, e.g. for prompts and the evaluation oracle.

  Args:
    objects: one or two ObjectSpec; those with a `center` are drawn there,
      the others placed by `layout` (jittered when `rng` is given).
    relation: id or name from RELATIONS for two objects, None for one.
    image_size: side in pixels, 16..64.
    rng: optional numpy Generator (or int seed) for the layout jitter.

  Returns:
    uint8 [image_size, image_size, 3].
  """
  image_size = _check_image_size(image_size)
  return _render_scenes([layout(Scene(tuple(objects), relation), rng)], image_size)[0]


# ----------------------------------------------------------------------------
# The dataset.


def _sample(split_id: int, seed: int, index: int) -> Tuple[Scene, str, int]:
  # One draw fixes the example: u[0:7] the structure, u[7:12] the layout,
  # u[12:] the caption. Slots go unused rather than shift, so changing one
  # choice never reshuffles the others.
  u = np.random.default_rng(np.random.SeedSequence([seed, split_id, index])).random(_NUM_UNIFORMS).tolist()
  num = 1 if u[0] < 0.5 else 2
  heldout_slot = min(int(u[1] * num), num - 1) if split_id == SPLITS.index("heldout") else -1
  pairs = []
  for k in range(num):
    pool = _HELDOUT_IDS if k == heldout_slot else _TRAIN_PAIRS
    # Two objects never share colour and shape, so that each stays identifiable.
    pool = [p for p in pool if p not in pairs]
    pairs.append(pool[min(int(u[2 + k] * len(pool)), len(pool) - 1)])
  sizes = [int(u[4 + k] * len(SIZES)) for k in range(num)]
  if num == 1:
    position = int(u[6] * len(POSITIONS))
    scene = Scene((ObjectSpec(pairs[0][0], pairs[0][1], sizes[0], position),), None)
  else:
    relation = int(u[6] * len(RELATIONS))
    scene = Scene(tuple(ObjectSpec(c, sh, sz) for (c, sh), sz in zip(pairs, sizes)), relation)
  scene = _layout(scene, u[7:12])
  caption, template = captions.caption_from_uniforms(scene, u[12:12 + captions.NUM_CAPTION_UNIFORMS])
  return scene, caption, template


def sample_scene(split: str, seed: int, index: int) -> Tuple[Scene, str]:
  """The structure and caption of example `index`, without rendering it (cheap).

  Returns:
    (laid-out Scene, caption); identical to what `sample_example` returns.
  """
  scene, caption, _ = _sample(_check_split(split), _check_count("seed", seed), _check_count("index", index))
  return scene, caption


def sample_example(split: str, seed: int, index: int, image_size: int = 32) -> Example:
  """Example `index` of the split's stream for `seed`; the same arguments always give the same bytes.

  Args:
    split: "train", "test" or "heldout".
    seed: non-negative int selecting the stream.
    index: non-negative int, position in the stream.
    image_size: side in pixels, 16..64.
  """
  split_id, image_size = _check_split(split), _check_image_size(image_size)
  seed, index = _check_count("seed", seed), _check_count("index", index)
  scene, caption, template = _sample(split_id, seed, index)
  image = _render_scenes([scene], image_size)[0]
  return Example(image, caption, scene.objects, scene.relation, template, split, seed, index)


def render_batch(split: str, seed: int, start: int, count: int,
                 image_size: int = 32) -> Tuple[np.ndarray, List[str], List[Scene]]:
  """Examples start .. start+count-1, rendered together (vectorised per shape).

  Image i equals `sample_example(split, seed, start + i, image_size).image`.

  Returns:
    (uint8 [count, image_size, image_size, 3], captions, laid-out Scenes).
  """
  split_id, image_size = _check_split(split), _check_image_size(image_size)
  seed, start, count = _check_count("seed", seed), _check_count("start", start), _check_count("count", count)
  samples = [_sample(split_id, seed, start + i) for i in range(count)]
  scenes = [sc for sc, _, _ in samples]
  # Chunks bound the supersampled temporaries to ~2M floats each.
  chunk = max(1, 2_000_000 // (2 * (_window_size(image_size) * SUPERSAMPLE) ** 2))
  images = np.empty((count, image_size, image_size, 3), np.uint8)
  for lo in range(0, count, chunk):
    images[lo:lo + chunk] = _render_scenes(scenes[lo:lo + chunk], image_size)
  return images, [c for _, c, _ in samples], scenes


def contains_heldout_pair(scene) -> bool:
  """Whether any object of `scene` (a Scene or Example) has a colour-shape pair from HELDOUT_PAIRS."""
  return any((o.color, o.shape) in _HELDOUT_IDS for o in scene.objects)


__all__ = [
    "BACKGROUND_RGB", "COLORS", "COLOR_RGB", "HELDOUT_PAIRS", "POSITIONS", "RELATIONS", "SHAPES", "SIZES",
    "SIZE_SCALES", "SPLITS", "Example", "ObjectSpec", "Scene", "caption_for", "contains_heldout_pair",
    "layout", "render", "render_batch", "sample_example", "sample_scene", "to_float",
]
