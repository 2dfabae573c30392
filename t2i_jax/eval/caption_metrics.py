"""Did the image show what the prompt asked for? Compares oracle readings with prompt scenes.

Inputs: `readings`, the dict `oracle.read` returns for N generated images, and
the N prompt scenes (captions.Scene) they were generated from. Both sides are
compared in the oracle's canonical slot order (`oracle.canonical`), so "A right
of B" is met by a picture of B on the left and A on the right.

Metrics (plain floats in [0, 1]):
  count_accuracy: all prompts; the oracle counts as many objects as the prompt names.
  color_accuracy, shape_accuracy, size_accuracy: one-object prompts; the
    attribute of the object read in slot 0 (whatever the count).
  position_accuracy: one-object prompts; one object read, at the prompt's grid cell.
  caption_accuracy: one-object prompts matching EVERY named attribute: count,
    colour, shape, size and position.
  objects_accuracy: two-object prompts; two objects read with the prompt's
    colour, shape and size each, in either order (drawn, perhaps misplaced).
  binding_accuracy: two-object prompts; two objects read, each object's colour,
    shape and size in its own slot and the relation's axis right -- i.e. the
    whole prompt, relation included.
  num_prompts, num_one_object, num_two_object: subset sizes, as floats.
A metric over an empty subset is NaN (the key is kept so that tables across
runs line up); check the num_* entries.
"""

from typing import Dict, Sequence

import numpy as np

from t2i_jax.data import shapes
from t2i_jax.eval import oracle

_READING_KEYS = ("count", "color", "shape", "size", "position", "orientation")
_SLOT_KEYS = ("color", "shape", "size")
METRICS = ("count_accuracy", "color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy",
           "caption_accuracy", "objects_accuracy", "binding_accuracy")


def _check(readings: Dict[str, np.ndarray], scenes: Sequence) -> Dict[str, np.ndarray]:
  missing = [k for k in _READING_KEYS if k not in readings]
  if missing:
    raise ValueError(f"readings lack {missing}; pass the dict that oracle.read returns.")
  n = len(scenes)
  out = {k: np.asarray(readings[k]) for k in _READING_KEYS}
  for k, v in out.items():
    want = (n, 2) if k in _SLOT_KEYS else (n,)
    if v.shape != want:
      raise ValueError(f"readings[{k!r}] has shape {v.shape} but {n} prompt scenes need {want}; read exactly "
                       "one image per prompt, in prompt order.")
  return out


def _mean(hits: np.ndarray) -> float:
  return float(np.mean(hits)) if hits.size else float("nan")


def caption_hits(readings: Dict[str, np.ndarray], scenes: Sequence) -> np.ndarray:
  """bool [N]: whether each image shows its one-object prompt in full (count, colour, shape, size and
  position: `caption_accuracy`'s hits); False for two-object prompts."""
  r = _check(readings, scenes)
  t = oracle.targets(scenes)
  ok = (r["count"] == t["count"]) & (t["count"] == 1) & (r["position"] == t["position"])
  return ok & np.all([r[k][:, 0] == t[k][:, 0] for k in _SLOT_KEYS], axis=0)


def compute(readings: Dict[str, np.ndarray], scenes: Sequence) -> Dict[str, float]:
  """The metrics of the module docstring for N images and their N prompt scenes.

  Args:
    readings: from `oracle.read`: count [N], color/shape/size [N, 2], position [N], orientation [N].
    scenes: N captions.Scene, the prompts (centres not needed).

  Returns:
    dict of float; NaN where the subset is empty.
  """
  r = _check(readings, scenes)
  if not len(scenes):
    return {**{k: float("nan") for k in METRICS}, "num_prompts": 0.0, "num_one_object": 0.0,
            "num_two_object": 0.0}
  t = oracle.targets(scenes)
  one, two = t["count"] == 1, t["count"] == 2
  count_ok = r["count"] == t["count"]
  slot_ok = {k: r[k] == t[k] for k in _SLOT_KEYS}  # [N, 2]
  position_ok = count_ok & (r["position"] == t["position"])
  in_order = np.all([slot_ok[k].all(axis=1) for k in _SLOT_KEYS], axis=0)
  swapped = np.all([(r[k] == t[k][:, ::-1]).all(axis=1) for k in _SLOT_KEYS], axis=0)
  binding_ok = count_ok & in_order & (r["orientation"] == t["orientation"])
  out = {
      "count_accuracy": _mean(count_ok),
      **{f"{k}_accuracy": _mean(slot_ok[k][one, 0]) for k in _SLOT_KEYS},
      "position_accuracy": _mean(position_ok[one]),
      "caption_accuracy": _mean(caption_hits(readings, scenes)[one]),
      "objects_accuracy": _mean((count_ok & (in_order | swapped))[two]),
      "binding_accuracy": _mean(binding_ok[two]),
  }
  out.update(num_prompts=float(len(scenes)), num_one_object=float(one.sum()), num_two_object=float(two.sum()))
  return out


def heldout_mask(scenes: Sequence) -> np.ndarray:
  """bool [N]: whether each prompt names a heldout colour-shape pair (shapes.HELDOUT_PAIRS)."""
  return np.asarray([shapes.contains_heldout_pair(s) for s in scenes], bool).reshape(len(scenes))


def subset(readings: Dict[str, np.ndarray], mask: np.ndarray) -> Dict[str, np.ndarray]:
  """The readings of the images where mask [N] is True."""
  return {k: np.asarray(v)[mask] for k, v in readings.items()}


def compute_with_heldout(readings: Dict[str, np.ndarray], scenes: Sequence) -> Dict[str, float]:
  """`compute` over all prompts, plus every metric again as "heldout_<name>" over the prompts
  naming a heldout pair and "seen_<name>" over the rest (NaN where a part is empty).

  E.g. heldout_caption_accuracy: one-object prompts such as "a red triangle at
  the top", whose pair the diffusion model never saw, read entirely right.
  """
  _check(readings, scenes)
  mask = heldout_mask(scenes)
  out = compute(readings, scenes)
  for prefix, m in (("heldout_", mask), ("seen_", ~mask)):
    part = compute(subset(readings, m), [s for s, keep in zip(scenes, m) if keep])
    out.update({prefix + k: v for k, v in part.items()})
  return out
