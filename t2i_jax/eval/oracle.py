"""The shapes oracle: a small learned CNN that reads a captioned-shapes image back into its structure.

It is the measuring instrument for text-to-image samples on the embedded
dataset: `read` turns images into the ids of what they show, `caption_metrics`
compares those with the prompts, and `features` (the penultimate layer) is the
embedding for a shapes-domain FID (`fid.py`).

Canonical slots. A two-object prompt "A right of B" and "B left of A" describe
the same picture, so readings and targets use an order defined by the image
alone: a pair is either side by side (the relation's axis is horizontal) or
one over the other (vertical) -- the renderer keeps the cross-axis offset to a
quarter of the separation (shapes.PAIR_* constants) -- and slot 0 holds the
left (horizontal) or top (vertical) object. One object sits in slot 0 with a
position in 0..8; slot 1, position or orientation that do not apply are -1.

Readings and targets are dicts of int arrays, N images:
  count: [N] 1 or 2.
  color, shape, size: [N, 2] ids into captions.COLORS / SHAPES / SIZES per slot.
  position: [N] id into captions.POSITIONS, -1 for two objects.
  orientation: [N] id into ORIENTATIONS, -1 for one object.

Images are uint8 [N, H, W, 3] or float in [-1, 1], any square H in 16..64;
the network resizes them (jax.image.resize, antialiased) to its resolution.
Weights ship in assets/shapes_oracle.msgpack and come from
`python -m t2i_jax.eval.train_oracle`, whose docstring lists the accuracies.
"""

import functools
import os
from typing import Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from t2i_jax.data import captions, shapes

ORIENTATIONS = ("horizontal", "vertical")
ASSET_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "shapes_oracle.msgpack")
FORMAT_VERSION = 1
# Per-slot heads and their class counts; the scene-level heads follow.
SLOT_HEADS = (("color", len(captions.COLORS)), ("shape", len(captions.SHAPES)), ("size", len(captions.SIZES)))
SCENE_HEADS = (("count", 2), ("position", len(captions.POSITIONS)), ("orientation", len(ORIENTATIONS)))
_TRAIN_HINT = "train it with `python -m t2i_jax.eval.train_oracle` (about 8 minutes on 2 CPU cores)"


def resize_to(x: jnp.ndarray, resolution: int) -> jnp.ndarray:
  """float [B, H, W, 3] -> [B, resolution, resolution, 3]; identity when the size already matches."""
  b, h, w, c = x.shape
  if (h, w) == (resolution, resolution):
    return x
  # antialias (the default) low-passes when shrinking, so a 64px render loses no shape to aliasing.
  return jax.image.resize(x, (b, resolution, resolution, c), "linear")


# The renderer's background in [-1, 1]; the geometry branch measures distance from it.
_BACKGROUND = np.asarray(shapes.BACKGROUND_RGB, np.float32) / 127.5 - 1.0


def foreground(x: jnp.ndarray) -> jnp.ndarray:
  """float [B, H, W, 3] in [-1, 1] -> [B, H, W, 1]: distance from the background over its image maximum.

  A pixel that covers a fraction a of an object of colour c lies at a·|c - bg|
  from the background, so after dividing by the maximum this is the coverage
  map whatever the colour: shapes are read without seeing colours, and a pair
  never seen in training (the heldout split) reads like any other.
  """
  m = jnp.sqrt(jnp.sum(jnp.square(x - _BACKGROUND), axis=-1, keepdims=True) + 1e-6)
  # The floor keeps an empty or noise-only image from being blown up to full contrast.
  return m / jnp.maximum(jnp.max(m, axis=(1, 2, 3), keepdims=True), 0.5)


class ShapesOracle(nn.Module):
  """Two-branch net: image [B, H, W, 3] in [-1, 1] -> dict of logits and `features` [B, hidden + color_hidden].

  The geometry branch (3x3 convs on `foreground`) gives count, shape, size,
  position and orientation; the colour branch (per-pixel 1x1 convs, max-pooled
  over color_pool x color_pool cells, so it sees which colours are where but
  hardly their outlines) gives the colours per slot. Neither can learn that a
  colour predicts a shape, which is what makes the heldout colour-shape pairs
  readable.

  Attributes:
    resolution: side the input is resized to.
    channels: output channels of the geometry branch's 3x3 convs.
    strides: one per conv; their product must divide `resolution`.
    hidden: width of the geometry branch's feature layer.
    color_channels: widths of the colour branch's 1x1 convs.
    color_pool: cell side of its max pooling; must divide `resolution`.
    color_hidden: width of its feature layer.
  """

  resolution: int = 32
  channels: Sequence[int] = (32, 64, 64, 64, 64)
  strides: Sequence[int] = (1, 2, 1, 2, 2)
  hidden: int = 192
  color_channels: Sequence[int] = (32, 16)
  color_pool: int = 4
  color_hidden: int = 64

  @nn.compact
  def __call__(self, x, gain=None):
    """x: [B, H, W, 3]; gain: optional [B] scale of the foreground map (training augmentation)."""
    x = resize_to(jnp.asarray(x, jnp.float32), self.resolution)
    g = foreground(x)
    if gain is not None:
      g = g * gain[:, None, None, None]
    for i, (ch, st) in enumerate(zip(self.channels, self.strides)):
      g = nn.relu(nn.Conv(ch, (3, 3), strides=(st, st), padding="SAME", name=f"conv{i}")(g))
    # Flattening (not pooling) keeps where things are: position, orientation and slot order.
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(g.reshape(g.shape[0], -1)))
    c = x - _BACKGROUND
    for i, ch in enumerate(self.color_channels):
      c = nn.relu(nn.Conv(ch, (1, 1), name=f"color_conv{i}")(c))
    c = nn.max_pool(c, (self.color_pool, self.color_pool), strides=(self.color_pool, self.color_pool))
    hc = nn.relu(nn.Dense(self.color_hidden, name="color_hidden")(c.reshape(c.shape[0], -1)))
    out = {"features": jnp.concatenate([h, hc], axis=-1)}
    for name, k in SLOT_HEADS:
      out[name] = nn.Dense(2 * k, name=name)(hc if name == "color" else h).reshape(-1, 2, k)
    for name, k in SCENE_HEADS:
      out[name] = nn.Dense(k, name=name)(h)
    return out


# ----------------------------------------------------------------------------
# Targets.


def _position_from_center(center) -> int:
  col, row = (min(int(c * 3), 2) for c in center)
  return 3 * row + col


def canonical(scene) -> Dict[str, object]:
  """Target ids of a scene in canonical slot order (see the module docstring).

  The order comes from the relation, so prompt scenes without centres work:
  "left of" and "above" keep objects[0] in slot 0, "right of" and "below" swap.

  Args:
    scene: a captions.Scene (or anything with `.objects` and `.relation`). A
      one-object scene without a position uses its centre's grid cell.

  Returns:
    dict: count (1 or 2), color / shape / size (2-tuples, -1 for an empty slot),
    position (id or -1), orientation (id into ORIENTATIONS or -1).
  """
  objs = tuple(scene.objects)
  if len(objs) == 1:
    o = objs[0]
    if o.position is None and o.center is None:
      raise ValueError("a one-object scene needs a position or a center for the oracle's target.")
    position = o.position if o.position is not None else _position_from_center(o.center)
    return dict(count=1, color=(o.color, -1), shape=(o.shape, -1), size=(o.size, -1), position=position,
                orientation=-1)
  if len(objs) != 2 or scene.relation not in range(len(captions.RELATIONS)):
    raise ValueError(f"a two-object scene needs a relation id in 0..{len(captions.RELATIONS) - 1}, "
                     f"got {scene.relation!r} with {len(objs)} objects; build it as captions.Scene.")
  # RELATIONS = left of, right of, above, below: "objects[0] right of objects[1]" puts objects[1] first.
  first, second = (objs[1], objs[0]) if scene.relation in (1, 3) else objs
  return dict(count=2, color=(first.color, second.color), shape=(first.shape, second.shape),
              size=(first.size, second.size), position=-1, orientation=0 if scene.relation in (0, 1) else 1)


def targets(scenes: Sequence) -> Dict[str, np.ndarray]:
  """`canonical` of each scene, stacked like a reading: int32 arrays [N] or [N, 2]."""
  rows = [canonical(s) for s in scenes]
  keys = ("count", "color", "shape", "size", "position", "orientation")
  return {k: np.asarray([r[k] for r in rows], np.int32).reshape((len(rows),) + ((2,) if k in ("color", "shape",
                                                                                            "size") else ()))
          for k in keys}


# ----------------------------------------------------------------------------
# Weights.


def init_params(module: ShapesOracle, seed: int = 0):
  """Fresh params of `module` (from a [1, resolution, resolution, 3] dummy input)."""
  return module.init(jax.random.PRNGKey(seed), jnp.zeros((1, module.resolution, module.resolution, 3)))["params"]


def save_oracle(path: str, module: ShapesOracle, params) -> None:
  """Writes the module's fields and params (float32) as one msgpack file."""
  config = dict(resolution=module.resolution, channels=list(module.channels), strides=list(module.strides),
                hidden=module.hidden, color_channels=list(module.color_channels), color_pool=module.color_pool,
                color_hidden=module.color_hidden)
  params = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
  blob = serialization.msgpack_serialize(dict(format_version=FORMAT_VERSION, config=config,
                                              params=serialization.to_state_dict(params)))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(blob)


def load_oracle(path: Optional[str] = None) -> Tuple[ShapesOracle, dict]:
  """Loads the shipped (or a given) oracle.

  Args:
    path: msgpack file written by `save_oracle`; defaults to ASSET_PATH.

  Returns:
    (module, params) for `read` and `features`.
  """
  path = ASSET_PATH if path is None else path
  if not os.path.exists(path):
    raise FileNotFoundError(f"no shapes-oracle weights at {path}; {_TRAIN_HINT}, which writes them there "
                            "(or pass the path of a file it wrote).")
  with open(path, "rb") as f:
    blob = serialization.msgpack_restore(f.read())
  if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path} is not a shapes-oracle file of format {FORMAT_VERSION}; {_TRAIN_HINT} to rewrite it.")
  cfg = blob["config"]
  try:
    module = ShapesOracle(resolution=int(cfg["resolution"]), channels=tuple(int(c) for c in cfg["channels"]),
                          strides=tuple(int(s) for s in cfg["strides"]), hidden=int(cfg["hidden"]),
                          color_channels=tuple(int(c) for c in cfg["color_channels"]),
                          color_pool=int(cfg["color_pool"]), color_hidden=int(cfg["color_hidden"]))
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path} has an unreadable oracle config {cfg!r} ({e}); {_TRAIN_HINT} to rewrite it.") from e
  expected = jax.eval_shape(lambda: init_params(module))
  got = jax.tree.map(np.shape, blob["params"])
  if jax.tree.map(lambda a: tuple(a.shape), expected) != got:
    raise ValueError(f"{path} holds parameters whose shapes do not match its config {cfg}; {_TRAIN_HINT}.")
  return module, jax.tree.map(jnp.asarray, blob["params"])


# ----------------------------------------------------------------------------
# Inference.


def prepare_images(images) -> np.ndarray:
  """uint8 or float [-1, 1] images [N, S, S, 3], S in 16..64 -> float32 [N, S, S, 3] in [-1, 1]."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f"the oracle reads square RGB images [N, S, S, 3], got shape {images.shape}; "
                     "add a batch axis with images[None] for one image.")
  if not shapes.MIN_IMAGE_SIZE <= images.shape[1] <= shapes.MAX_IMAGE_SIZE:
    raise ValueError(f"image side {images.shape[1]} is outside the {shapes.MIN_IMAGE_SIZE}..{shapes.MAX_IMAGE_SIZE} "
                     "pixels the oracle was trained on; resize the images into that range first.")
  if images.dtype == np.uint8:
    return shapes.to_float(images)
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"images of dtype {images.dtype}: pass uint8 in [0, 255] or floats in [-1, 1].")
  if images.size and (np.nanmax(images) > 1.5 or np.nanmin(images) < -1.5):
    raise ValueError(f"float images must lie in [-1, 1] (got {np.nanmin(images):.3g}..{np.nanmax(images):.3g}); "
                     "convert [0, 255] images to uint8, and map [0, 1] ones with 2 * x - 1.")
  # Diffusion samples overshoot [-1, 1] a little; the renderer never does.
  return np.clip(np.nan_to_num(images.astype(np.float32)), -1.0, 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _forward(module, params, x):
  return module.apply({"params": params}, x)


def _apply(module, params, images, batch_size: int) -> Dict[str, np.ndarray]:
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be at least 1.")
  x = prepare_images(images)
  n = x.shape[0]
  parts = []
  # Chunks are padded to batch_size, or a small set to the next power of two, so that
  # reading sets of varying sizes compiles a handful of shapes per image size, not one per N.
  width = batch_size if n > batch_size else min(batch_size, 1 << max(n - 1, 0).bit_length())
  for lo in range(0, n, batch_size):
    chunk = x[lo:lo + batch_size]
    pad = width - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.float32)])
    out = jax.device_get(_forward(module, params, chunk))
    parts.append({k: v[:v.shape[0] - pad] for k, v in out.items()})
  if not parts:
    raise ValueError("no images to read: pass at least one image.")
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def decode(logits: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Network outputs -> a reading (argmax per head, inapplicable entries set to -1)."""
  count = np.argmax(logits["count"], -1).astype(np.int32) + 1
  out = {"count": count}
  for name, _ in SLOT_HEADS:
    ids = np.argmax(logits[name], -1).astype(np.int32)
    ids[count == 1, 1] = -1
    out[name] = ids
  out["position"] = np.where(count == 1, np.argmax(logits["position"], -1), -1).astype(np.int32)
  out["orientation"] = np.where(count == 2, np.argmax(logits["orientation"], -1), -1).astype(np.int32)
  return out


def read(module: ShapesOracle, params, images, batch_size: int = 256) -> Dict[str, np.ndarray]:
  """Reads images into structure ids.

  Args:
    module, params: from `load_oracle`.
    images: uint8 [N, S, S, 3] or float [-1, 1], S in 16..64.
    batch_size: images per forward pass (one compile per image size).

  Returns:
    dict of int32 numpy arrays, laid out as in the module docstring.
  """
  return decode(_apply(module, params, images, batch_size))


def features(module: ShapesOracle, params, images, batch_size: int = 256) -> np.ndarray:
  """Penultimate activations float32 [N, hidden + color_hidden] of images [N, S, S, 3], for FID."""
  return np.asarray(_apply(module, params, images, batch_size)["features"], np.float32)


def attribute_accuracy(readings: Dict[str, np.ndarray], target: Dict[str, np.ndarray]) -> Dict[str, float]:
  """Accuracy of a reading against `targets`, per attribute and pooled.

  Attributes are: count (every scene); color, shape and size of each object;
  position (one object); orientation, i.e. the relation in canonical order (two
  objects). `all` pools every attribute of every scene; `scene` is the share of
  scenes read entirely right. Attributes a subset lacks come out NaN.
  """
  one, two = target["count"] == 1, target["count"] == 2
  hits = {"count": readings["count"] == target["count"]}
  for name, _ in SLOT_HEADS:
    hits[name] = np.concatenate([(readings[name][:, 0] == target[name][:, 0]),
                                 (readings[name][two, 1] == target[name][two, 1])])
  hits["position"] = readings["position"][one] == target["position"][one]
  hits["orientation"] = readings["orientation"][two] == target["orientation"][two]
  out = {k: float(np.mean(v)) if v.size else float("nan") for k, v in hits.items()}
  pooled = np.concatenate(list(hits.values()))
  out["all"] = float(np.mean(pooled)) if pooled.size else float("nan")
  same = np.ones_like(one)
  for k in readings:
    same &= np.all((readings[k] == target[k]).reshape(len(one), -1), axis=1)
  out["scene"] = float(np.mean(same)) if same.size else float("nan")
  return out
