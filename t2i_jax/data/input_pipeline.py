"""Grain input pipelines: captioned shapes rendered on the fly, or any TFDS array_record data source.

A source is anything with `__len__` and `__getitem__(i) -> dict of numpy
arrays` holding at least "image" (uint8 [H, W, C]) and, for text models,
"caption" (bytes or str): `ShapesSource` renders example i with
`shapes.sample_example`; `shapes_tfds.build_if_missing` returns TFDS
array_record sources with the same keys; `tfds_sources.open_source` reads
prepared cifar10, imagenet_resized and coco_captions. `make_source(config.data)`
picks one by name. `create_iterator` turns any of them into a checkpointable
iterator of batches:

  source -> this process's shard -> shuffle (reshuffled every epoch) -> repeat
         -> (one of "captions" drawn as "caption") -> (resize shorter side + centre/random crop)
         -> uint8 to float32 in [-1, 1], Python scalars to 32 bits (+ optional flip)
         -> batch -> tokenise

Everything is a grain `MapDataset` until batching, so element i of the stream is
a pure function of (seed, i): the iterator's state is one position, and
`get_state()` / `set_state()` restore it exactly on any host.

A batch holds every key of the source stacked along a new leading axis of size
`batch_size` (per process), with "image" float32 [B, H, W, 3] in [-1, 1] and,
when a tokenizer is given, "tokens" int32 [B, L] and "token_mask" bool [B, L].
"caption" stays a host-only numpy bytes array [B]; drop it before building
global device arrays.
"""

from typing import Any, Dict, Optional

import grain
import numpy as np
from PIL import Image

from t2i_jax.data import shapes, tfds_sources
from t2i_jax.data import tokenizer as tokenizer_lib

MAX_OBJECTS = 2
# Keys of a captioned-shapes example besides "image" and "caption"; int32 but
# centers (float32). -1 marks "absent" (the second object of a one-object scene,
# the position of an object placed by a relation, the relation of a one-object scene).
ATTRIBUTE_KEYS = ("colors", "shapes", "sizes", "positions", "centers", "relation", "num_objects", "index")


def _check_int(name: str, value, minimum: int) -> int:
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
    shapes.sample_scene(split, _check_int("seed", seed, 0), 0)  # validates split and seed
    shapes._check_image_size(image_size)  # pylint: disable=protected-access
    self.split, self.seed, self.image_size = split, int(seed), int(image_size)
    self.num_examples = _check_int("num_examples", num_examples, 1)

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


# This project's split names -> captioned-shapes splits; "validation" is the in-distribution test split.
SHAPES_SPLITS = {"train": "train", "test": "test", "heldout": "heldout", "validation": "test"}
# Captioned-shapes split sizes when the data config leaves them out: test and heldout only feed
# evaluation, so a few hundred examples each, and fixed, so that a TFDS build is found again.
SHAPES_DEFAULT_SIZES = {"num_train": 2000, "num_test": 500, "num_heldout": 500}
SOURCE_NAMES = ("shapes", "shapes_rendered") + tfds_sources.SUPPORTED


def _config_get(config, key: str, default=None):
  value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
  return default if value is None else value


def make_source(data_config, split: str = "train"):
  """The random-access source that a data config names (give it to `create_iterator`).

  Args:
    data_config: ml_collections ConfigDict or mapping with
      name: "shapes" (captioned shapes written once as TFDS array_record files
        under data_dir, then read), "shapes_rendered" (the same examples
        rendered when asked for; nothing is written), or one of
        `tfds_sources.SUPPORTED` ("cifar10", "imagenet_resized/64x64",
        "coco_captions"; prepared beforehand with `python -m t2i_jax.data.prepare`);
      image_size: for the shapes sources, the side they are rendered at
        (16..64); the TFDS datasets keep their stored size, and
        `create_iterator(image_size=...)` resizes and crops them;
      data_dir (optional): TFDS data directory, default $TFDS_DATA_DIR or ~/tensorflow_datasets;
      seed (optional, shapes): the example stream, default 0 (not the shuffle seed);
      num_train, num_test, num_heldout (optional, shapes): split sizes, default 2000 / 500 / 500;
      pair_fraction (optional, shapes): the share of two-object scenes in the train split
        (`PairFractionSource`); None keeps the dataset's ~1/2.
    split: "train", "test" or "validation" (each dataset maps these to its own
      splits, see `tfds_sources.open_source`); shapes also has "heldout"
      (held-out colour-shape pairs), and validation means test.

  Returns:
    A source with `__len__` and `__getitem__(i) -> dict of numpy values`:
    "image" uint8 [H, W, 3] and "caption" bytes plus the shapes attributes for
    the shapes sources; see `tfds_sources.open_source` for the others.

  Raises:
    ValueError: an unknown name or split, or a bad size.
    FileNotFoundError: a TFDS dataset that is not prepared in data_dir (the
      message gives the prepare command).
  """
  name = _config_get(data_config, "name")
  if name not in SOURCE_NAMES:
    raise ValueError(f"data.name={name!r} is not a dataset this pipeline reads; use one of {list(SOURCE_NAMES)}.")
  data_dir = _config_get(data_config, "data_dir") or tfds_sources.default_data_dir()
  pair_fraction = _config_get(data_config, "pair_fraction")
  if name in tfds_sources.SUPPORTED:
    if pair_fraction is not None:
      raise ValueError(f"data.pair_fraction={pair_fraction!r} re-balances captioned shapes by object count; "
                       f"{name!r} has no such count, so leave it None.")
    return tfds_sources.open_source(name, split, data_dir)

  if split not in SHAPES_SPLITS:
    raise ValueError(f"split={split!r} is not a captioned-shapes split; use one of {list(SHAPES_SPLITS)}.")
  split = SHAPES_SPLITS[split]
  image_size = _config_get(data_config, "image_size")
  if image_size is None:
    raise ValueError("data.image_size is missing; captioned shapes are rendered at that side (16..64), e.g. 32.")
  seed = _config_get(data_config, "seed", 0)
  sizes = {k: _config_get(data_config, k, v) for k, v in SHAPES_DEFAULT_SIZES.items()}
  if name == "shapes_rendered":
    source = ShapesSource(split, seed=seed, num_examples=sizes[f"num_{split}"], image_size=image_size)
  else:
    # shapes_tfds imports this module, so it is imported here rather than at the top.
    from t2i_jax.data import shapes_tfds  # pylint: disable=g-import-not-at-top

    sources = shapes_tfds.build_if_missing(data_dir, image_size=image_size, seed=seed, **sizes)
    if split not in sources:
      raise ValueError(f"split={split!r} is empty in this config (data.num_{split}=0); give it a positive size.")
    source = sources[split]
  # Only training is re-balanced: the test and held-out splits keep the dataset's own mix.
  if pair_fraction is not None and split == "train":
    source = PairFractionSource(source, split, seed, pair_fraction)
  return source


def _derived_seed(seed: int, stream: int) -> int:
  # Independent 32-bit seeds per random transformation, all from one user seed.
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _prepare(example: Dict[str, Any]) -> Dict[str, Any]:
  # TFDS decodes scalar features to Python numbers, which would batch to
  # 64 bits; make them the 32-bit numpy scalars that ShapesSource returns.
  example = {k: np.int32(v) if isinstance(v, int) and not isinstance(v, bool)
             else np.float32(v) if isinstance(v, float) else v for k, v in example.items()}
  image = np.asarray(example["image"])
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"the source's 'image' must be uint8 [H, W, C], got {image.dtype} {image.shape}; "
                     "give a source of raw uint8 images (the pipeline scales them to [-1, 1]).")
  example["image"] = shapes.to_float(image)
  return example


def resize_and_crop(image: np.ndarray, image_size: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """Resizes the shorter side to image_size, then crops a square: the centre, or a uniform random one.

  The resize is pillow's bicubic, whose kernel widens with the reduction, so it
  antialiases when shrinking (COCO's 640x480 to 64 px) and interpolates when
  enlarging; an image whose shorter side already is image_size is only cropped.

  Args:
    image: uint8 [H, W, C], C 1, 3 or 4.
    image_size: side of the result in pixels.
    rng: None for the centre crop (offsets rounded down); else the generator
      that draws the crop's top and left offsets, each uniform over every
      position that fits.

  Returns:
    uint8 [image_size, image_size, C].
  """
  h, w = image.shape[:2]
  if min(h, w) != image_size:
    # The shorter side gets exactly image_size; the longer keeps the aspect ratio, rounded.
    if h <= w:
      new_h, new_w = image_size, max(image_size, round(w * image_size / h))
    else:
      new_h, new_w = max(image_size, round(h * image_size / w)), image_size
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))
    image = resized.reshape(new_h, new_w, image.shape[-1])
    h, w = new_h, new_w
  if rng is None:
    top, left = (h - image_size) // 2, (w - image_size) // 2
  else:
    top, left = int(rng.integers(0, h - image_size + 1)), int(rng.integers(0, w - image_size + 1))
  return image[top:top + image_size, left:left + image_size]


class _ResizeCrop:
  """Map (centre crop) or random map (random crop) on examples: "image" to uint8 [S, S, C]."""

  def __init__(self, image_size: int):
    self.image_size = image_size

  def __call__(self, example: Dict[str, Any], rng: Optional[np.random.Generator] = None) -> Dict[str, Any]:
    image = np.asarray(example["image"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
      raise ValueError(f"the source's 'image' must be uint8 [H, W, 1, 3 or 4], got {image.dtype} {image.shape}; "
                       "give a source of raw uint8 images (the pipeline resizes and scales them).")
    if image.shape[:2] == (self.image_size, self.image_size):
      return example  # nothing to resize or crop (the generator is simply not used)
    example = dict(example)
    example["image"] = resize_and_crop(image, self.image_size, rng)
    return example


def _pick_caption(example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
  # One of the image's captions, drawn anew at every position of the stream, i.e. every epoch;
  # "captions" itself varies in length and would not batch.
  example = dict(example)
  captions = example.pop("captions")
  if len(captions):
    example["caption"] = captions[int(rng.integers(len(captions)))]
  return example


def _flip(example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
  if rng.random() < 0.5:
    example = dict(example)
    example["image"] = example["image"][:, ::-1]
  return example


def _batch(examples) -> Dict[str, np.ndarray]:
  # grain's default batching reports images of different sizes as a structure mismatch; say what to do.
  sizes = sorted({np.shape(e["image"]) for e in examples})
  if len(sizes) > 1:
    raise ValueError(f"the images of one batch have different sizes {sizes[:4]}; give create_iterator an "
                     "image_size (config data.image_size) to resize and crop them all to one square size.")
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class _Tokenize:
  """Batch map: adds tokens int32 [B, L] and token_mask bool [B, L] from the captions."""

  def __init__(self, tokenizer, context_length: int):
    self.tokenizer, self.context_length = tokenizer, context_length

  def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
    texts = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in batch["caption"]]
    batch = dict(batch)
    batch["tokens"], batch["token_mask"] = tokenizer_lib.tokenize(self.tokenizer, texts, self.context_length)
    return batch


def create_dataset(source, *, batch_size: int, seed: int, shuffle: bool = True, num_epochs: Optional[int] = None,
                   tokenizer=None, context_length: Optional[int] = None, process_index: int = 0,
                   process_count: int = 1, drop_remainder: bool = True, random_flip: bool = False,
                   num_threads: int = 2, prefetch_buffer_size: int = 128, image_size: Optional[int] = None,
                   random_crop: bool = False) -> grain.IterDataset:
  """The grain IterDataset behind `create_iterator` (same arguments); `iter()` it for an iterator."""
  if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
    raise ValueError(f"source={source!r} is not random-access; give a ShapesSource or a TFDS data source "
                     "(anything with __len__ and __getitem__).")
  batch_size = _check_int("batch_size", batch_size, 1)
  seed = _check_int("seed", seed, 0)
  process_count = _check_int("process_count", process_count, 1)
  process_index = _check_int("process_index", process_index, 0)
  if process_index >= process_count:
    raise ValueError(f"process_index={process_index} must be below process_count={process_count} "
                     "(pass jax.process_index() and jax.process_count()).")
  if num_epochs is not None:
    num_epochs = _check_int("num_epochs", num_epochs, 1)
  if tokenizer is not None and context_length is None:
    raise ValueError("a tokenizer needs context_length (the text encoder's number of tokens), e.g. 32.")
  if tokenizer is not None:
    context_length = _check_int("context_length", context_length, 1)
  num_threads = _check_int("num_threads", num_threads, 0)
  prefetch_buffer_size = _check_int("prefetch_buffer_size", prefetch_buffer_size, 0)
  if image_size is not None:
    image_size = _check_int("image_size", image_size, 1)
  if random_crop and image_size is None:
    raise ValueError("random_crop=True needs image_size (the side of the square crop), e.g. image_size=64.")

  # Every process gets the same number of examples, so that all run the same
  # number of steps per epoch (a process that stops early hangs the others in a
  # collective); this drops at most process_count - 1 examples of the source.
  per_process = len(source) // process_count
  if per_process == 0 or (drop_remainder and num_epochs is not None and per_process * num_epochs < batch_size):
    raise ValueError(
        f"a source of {len(source)} examples split over {process_count} processes gives {per_process} per "
        f"process, too few for one batch of {batch_size} per process; use a larger source or a smaller batch.")
  ds = grain.MapDataset.source(source)
  ds = ds[process_index * per_process:(process_index + 1) * per_process]
  if shuffle:
    ds = ds.shuffle(seed=_derived_seed(seed, 0))  # sees the epoch in the index: a new order every epoch
  ds = ds.repeat(num_epochs)
  # Random steps are grain random maps: each element's generator comes from (seed, position in the
  # repeated stream), so draws differ between epochs and the iterator state stays one position.
  if "captions" in source[process_index * per_process]:
    ds = ds.random_map(_pick_caption, seed=_derived_seed(seed, 3))
  if image_size is not None:
    resize = _ResizeCrop(image_size)
    ds = ds.random_map(resize, seed=_derived_seed(seed, 2)) if random_crop else ds.map(resize)
  ds = ds.map(_prepare)
  if random_flip:
    ds = ds.random_map(_flip, seed=_derived_seed(seed, 1))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
  it = it.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_batch)
  if tokenizer is not None:
    it = it.map(_Tokenize(tokenizer, context_length))
  return it


def create_iterator(source, *, batch_size: int, seed: int, shuffle: bool = True, num_epochs: Optional[int] = None,
                    tokenizer=None, context_length: Optional[int] = None, process_index: int = 0,
                    process_count: int = 1, drop_remainder: bool = True, random_flip: bool = False,
                    num_threads: int = 2, prefetch_buffer_size: int = 128, image_size: Optional[int] = None,
                    random_crop: bool = False) -> grain.DatasetIterator:
  """A checkpointable iterator of this process's batches.

  Args:
    source: random-access source of example dicts (`make_source`, `ShapesSource`,
      a TFDS array_record data source): "image" uint8 [H, W, C], "caption"
      bytes/str for text models, more keys kept as they are. A source whose
      examples hold "captions" (several captions of one image, e.g. coco_captions)
      gets one of them drawn per example and epoch from the seeded stream as
      "caption", and "captions" is dropped.
    batch_size: examples per batch on this process (global batch / process_count).
    seed: non-negative int; fixes the shuffle order of every epoch, the flips, crops and caption draws.
    shuffle: shuffle within this process's shard, with a new order each epoch.
    num_epochs: passes over the shard; None repeats forever.
    tokenizer: optional tokenizer (see `tokenizer.load_tokenizer`); adds "tokens"
      int32 [B, context_length] and "token_mask" bool [B, context_length].
    context_length: tokens per caption, needed with a tokenizer.
    process_index, process_count: this process's place among the data-loading
      processes (jax.process_index(), jax.process_count()); each reads the
      contiguous slice [i * n, (i + 1) * n) of the source, n = len(source) // process_count.
    drop_remainder: drop a last partial batch (only exists when num_epochs is set).
    random_flip: flip each image left-right with probability 1/2. Leave it
      False for captioned shapes: a flip turns "a left of b" into "b left of a"
      and "top left" into "top right" while caption, positions, relation and
      centers stay as they were, so it would teach the model wrong captions.
      Only for data whose labels are mirror-invariant.
    image_size: None keeps images as the source gives them (all must share a
      size to batch). Otherwise every image is resized so its shorter side is
      image_size (bicubic, antialiased; skipped when it already is) and cropped
      to image_size x image_size; see `resize_and_crop`.
    random_crop: crop at a uniform random offset drawn from the seeded stream
      (a new one every epoch) instead of the centre; needs image_size. With
      square sources resized to image_size there is nothing to crop.
    num_threads, prefetch_buffer_size: grain read threads and buffered elements.
      Rendering and PNG decoding run in those threads but mostly hold the GIL,
      so a few threads suffice to overlap input with the train step; 0 reads
      synchronously in `next()` (the fastest on a 2-core host: ~4k rendered or
      ~5k TFDS examples/s at 32 px, against ~2k / ~3k with 8 threads).

  Returns:
    A grain DatasetIterator: `next(it)` gives a dict of numpy arrays with
    leading axis batch_size (image float32 [B, H, W, 3] in [-1, 1]);
    `it.get_state()` is a JSON-serialisable dict and `it.set_state(state)` on an
    iterator made with the same arguments continues with exactly the same batches.
  """
  return iter(create_dataset(
      source, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs, tokenizer=tokenizer,
      context_length=context_length, process_index=process_index, process_count=process_count,
      drop_remainder=drop_remainder, random_flip=random_flip, num_threads=num_threads,
      prefetch_buffer_size=prefetch_buffer_size, image_size=image_size, random_crop=random_crop))


__all__ = ["ATTRIBUTE_KEYS", "MAX_OBJECTS", "SHAPES_DEFAULT_SIZES", "SHAPES_SPLITS", "SOURCE_NAMES",
           "PairFractionSource", "ShapesSource", "create_dataset", "create_iterator", "example_dict", "make_source",
           "resize_and_crop"]
