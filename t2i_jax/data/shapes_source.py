"""Captioned-shapes examples as random-access sources: rendered on the fly, or re-balanced by object count.

`example_dict` is the flat dict of numpy arrays every captioned-shapes source
returns (the TFDS build in `shapes_tfds` stores exactly these keys);
`ShapesSource` renders example i when asked for; `PairFractionSource` changes
the share of two-object scenes of any captioned-shapes source.
"""

from typing import Dict

import numpy as np

from t2i_jax.data import shapes

# An example holds "image", "caption" and colors, shapes, sizes, positions, centers, relation, num_objects
# and index, int32 but centers (float32). -1 marks "absent" (the second object of a one-object scene, the
# position of an object placed by a relation, the relation of a one-object scene).
MAX_OBJECTS = 2


def check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
  return int(value)


def example_dict(example: shapes.Example) -> Dict[str, np.ndarray]:
  """A rendered `shapes.Example` as the flat dict of numpy arrays that sources return.

  Returns:
    image uint8 [H, W, 3]; caption bytes (UTF-8, as TFDS returns text);
    colors, shapes, sizes, positions int32 [MAX_OBJECTS] (-1 where absent);
    centers float32 [MAX_OBJECTS, 2] ((x, y) fractions of the side, -1 where
    absent); relation, num_objects, index int32 scalars (relation -1 for one object).
  """
  def per_object(get):
    return np.array([get(o) for o in example.objects] + [-1] * (MAX_OBJECTS - len(example.objects)), np.int32)
  centers = np.full((MAX_OBJECTS, 2), -1.0, np.float32)
  centers[:len(example.objects)] = [o.center for o in example.objects]
  return {
      "image": example.image,
      "caption": example.caption.encode("utf-8"),
      "colors": per_object(lambda o: o.color),
      "shapes": per_object(lambda o: o.shape),
      "sizes": per_object(lambda o: o.size),
      "positions": per_object(lambda o: -1 if o.position is None else o.position),
      "centers": centers,
      "relation": np.int32(-1 if example.relation is None else example.relation),
      "num_objects": np.int32(len(example.objects)),
      "index": np.int32(example.index),
  }


def _check_index(source, index) -> int:
  """index as an int, or a TypeError / IndexError naming the source."""
  name = type(source).__name__
  if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
    raise TypeError(f"{name} indices are integers, got {index!r}.")
  if not 0 <= index < len(source):
    raise IndexError(f"index {index} is out of range for a {name} of {len(source)} examples.")
  return int(index)


class ShapesSource:
  """Random-access captioned-shapes source: example i is rendered when asked for (grain RandomAccessDataSource).

  Rendering is deterministic in (split, seed, i), so the source holds no data
  and pickles to a few bytes (grain worker processes rebuild it for free).

  Args:
    split: "train", "test" or "heldout".
    seed: non-negative int selecting the split's example stream (not the shuffle).
    num_examples: length of the source; examples 0 .. num_examples-1 of the stream.
    image_size: side in pixels, 16..64.
  """

  def __init__(self, split: str = "train", seed: int = 0, num_examples: int = 10_000, image_size: int = 32):
    shapes.sample_scene(split, check_int("seed", seed, 0), 0)  # validates split and seed
    shapes._check_image_size(image_size)  # pylint: disable=protected-access
    self.split, self.seed, self.image_size = split, int(seed), int(image_size)
    self.num_examples = check_int("num_examples", num_examples, 1)

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index) -> Dict[str, np.ndarray]:
    index = _check_index(self, index)
    return example_dict(shapes.sample_example(self.split, self.seed, index, self.image_size))

  def __repr__(self) -> str:
    return (f"ShapesSource(split={self.split!r}, seed={self.seed}, num_examples={self.num_examples}, "
            f"image_size={self.image_size})")


class PairFractionSource:
  """A captioned-shapes source re-balanced so that a given fraction of its examples are two-object scenes.

  The dataset draws one or two objects with probability 1/2 each. Binding (which colour and shape sit on
  which side of the relation) is only learned from two-object scenes, so a run can ask for more of
  them: the first round(n * pair_fraction) positions read the source's two-object examples, the others
  its one-object examples, each kind spread evenly (repeated where it has fewer examples than
  positions, thinned where more). The length stays n, so a shuffled epoch holds exactly that fraction
  of two-object scenes.

  Args:
    source: a captioned-shapes source (`ShapesSource` or the TFDS one from `make_source`).
    split, seed: the split and stream it holds, which tell each example's object count without
      rendering or reading it (`shapes.sample_scene`).
    pair_fraction: in [0, 1]; 1 trains on two-object scenes only.
  """

  def __init__(self, source, split: str, seed: int, pair_fraction: float):
    if isinstance(pair_fraction, bool) or not isinstance(pair_fraction, (int, float)) or not 0 <= pair_fraction <= 1:
      raise ValueError(f"data.pair_fraction={pair_fraction!r} must lie in [0, 1] (the share of two-object "
                       "scenes); leave it None for the dataset's own ~0.5.")
    count = np.array([len(shapes.sample_scene(split, seed, i)[0].objects) for i in range(len(source))])
    self.pairs, self.singles = np.flatnonzero(count == 2), np.flatnonzero(count == 1)
    self.source, self.pair_fraction = source, float(pair_fraction)
    self.num_pair_slots = int(round(len(source) * self.pair_fraction))
    for kind, items, slots in (("two-object", self.pairs, self.num_pair_slots),
                               ("one-object", self.singles, len(source) - self.num_pair_slots)):
      if slots and not len(items):
        raise ValueError(f"pair_fraction={pair_fraction} asks for {slots} {kind} scenes, but this source of "
                         f"{len(source)} examples holds none; use a larger source.")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index) -> Dict[str, np.ndarray]:
    index = _check_index(self, index)
    if index < self.num_pair_slots:
      items, slot, slots = self.pairs, index, self.num_pair_slots
    else:
      items, slot, slots = self.singles, index - self.num_pair_slots, len(self) - self.num_pair_slots
    # Spread the slots evenly over the items: each is read floor or ceil(slots / len(items)) times.
    return self.source[int(items[slot * len(items) // slots])]

  def __repr__(self) -> str:
    return f"PairFractionSource({self.source!r}, pair_fraction={self.pair_fraction})"
