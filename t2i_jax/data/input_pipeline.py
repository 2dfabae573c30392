"""Grain input pipelines: captioned shapes rendered on the fly, or any TFDS array_record data source.

A source is anything with `__len__` and `__getitem__(i) -> dict of numpy
arrays` holding at least "image" (uint8 [H, W, C]) and, for text models,
"caption" (bytes or str): `shapes_source.ShapesSource` renders example i with
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

from t2i_jax.data import shapes, shapes_source, tfds_sources
from t2i_jax.data import tokenizer as tokenizer_lib

# This project's split names -> captioned-shapes splits; "validation" is the in-distribution test split.
SHAPES_SPLITS = {"train": "train", "test": "test", "heldout": "heldout", "validation": "test"}
SOURCE_NAMES = ("shapes", "shapes_rendered") + tfds_sources.SUPPORTED
# The data section of a config: every key it may hold and its default. `...` marks a key with no default;
# a type, an optional value that is None unless set (t2i_jax.config_keys builds and checks configs from
# this table). The captioned-shapes split sizes: test and heldout only feed evaluation, so a few hundred
# examples each, and fixed, so that a TFDS build is found again.
DATA_DEFAULTS = dict(name=..., image_size=..., data_dir=str, seed=0, num_train=2000, num_test=500, num_heldout=500,
                     pair_fraction=float, random_crop=False, random_flip=False, tokenizer=str, context_length=int,
                     label_key="label", cache_in_memory=False)


def data_setting(data_config, key: str):
  """data_config[key] (a ConfigDict or a mapping), or its DATA_DEFAULTS value when absent or None."""
  value = data_config.get(key) if hasattr(data_config, "get") else getattr(data_config, key, None)
  if value is not None:
    return value
  default = DATA_DEFAULTS[key]
  if default is ...:
    raise ValueError(f"data.{key} is missing; set it in the config (e.g. data.name='shapes', data.image_size=32).")
  return None if isinstance(default, type) else default


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
      num_train, num_test, num_heldout (optional, shapes): split sizes, default 2000 / 500 / 500
        (every default is in DATA_DEFAULTS);
      pair_fraction (optional, shapes): the share of two-object scenes in the train split
        (`shapes_source.PairFractionSource`); None keeps the dataset's ~1/2;
      cache_in_memory (optional): keep each example after its first read (`CachedSource`).
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
  name = data_setting(data_config, "name")
  if name not in SOURCE_NAMES:
    raise ValueError(f"data.name={name!r} is not a dataset this pipeline reads; use one of {list(SOURCE_NAMES)}.")
  data_dir = data_setting(data_config, "data_dir") or tfds_sources.default_data_dir()
  pair_fraction = data_setting(data_config, "pair_fraction")
  if name in tfds_sources.SUPPORTED:
    if pair_fraction is not None:
      raise ValueError(f"data.pair_fraction={pair_fraction!r} re-balances captioned shapes by object count; "
                       f"{name!r} has no such count, so leave it None.")
    source = tfds_sources.open_source(name, split, data_dir)
    return CachedSource(source) if data_setting(data_config, "cache_in_memory") else source

  if split not in SHAPES_SPLITS:
    raise ValueError(f"split={split!r} is not a captioned-shapes split; use one of {list(SHAPES_SPLITS)}.")
  split = SHAPES_SPLITS[split]
  image_size = data_setting(data_config, "image_size")
  seed = data_setting(data_config, "seed")
  sizes = {k: data_setting(data_config, k) for k in ("num_train", "num_test", "num_heldout")}
  if name == "shapes_rendered":
    source = shapes_source.ShapesSource(split, seed=seed, num_examples=sizes[f"num_{split}"], image_size=image_size)
  else:
    # Imported only here: it loads tensorflow_datasets, which the other sources do not need.
    from t2i_jax.data import shapes_tfds  # pylint: disable=g-import-not-at-top

    sources = shapes_tfds.build_if_missing(data_dir, image_size=image_size, seed=seed, **sizes)
    if split not in sources:
      raise ValueError(f"split={split!r} is empty in this config (data.num_{split}=0); give it a positive size.")
    source = sources[split]
  # Only training is re-balanced: the test and held-out splits keep the dataset's own mix.
  if pair_fraction is not None and split == "train":
    source = shapes_source.PairFractionSource(source, split, seed, pair_fraction)
  return CachedSource(source) if data_setting(data_config, "cache_in_memory") else source


class CachedSource:
  """A random-access source that keeps each example in memory after its first read.

  Reading a captioned-shapes example from its TFDS files costs about 1 ms of Python (record read,
  feature parsing, PNG decoding), which bounds a batch-128 CLIP at ~600 images/s on two cores; a
  model that reads its split for several epochs pays that once per example instead. The cached
  arrays are read-only, so a later step that wrote into one would fail rather than change the data.
  Memory: the split's decoded size (50,000 24 px shapes: 90 MB).
  """

  def __init__(self, source):
    self._source, self._cache = source, {}

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    example = self._cache.get(index)
    if example is None:
      example = {k: _read_only(v) for k, v in self._source[index].items()}
      self._cache[index] = example
    return dict(example)


def _read_only(value):
  if isinstance(value, np.ndarray):
    value = value.view()
    value.flags.writeable = False
  return value


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


def downsample(images: np.ndarray, factor: int) -> np.ndarray:
  """Box-filter downsampling [B, H, W, C] -> [B, H/f, W/f, C] (an upsampler's low-resolution input)."""
  images = np.asarray(images)
  b, h, w, c = images.shape
  if h % factor or w % factor:
    raise ValueError(f"images of {h}x{w} cannot be downsampled {factor}x; use sides divisible by {factor}.")
  return images.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


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
  batch_size = shapes_source.check_int("batch_size", batch_size, 1)
  seed = shapes_source.check_int("seed", seed, 0)
  process_count = shapes_source.check_int("process_count", process_count, 1)
  process_index = shapes_source.check_int("process_index", process_index, 0)
  if process_index >= process_count:
    raise ValueError(f"process_index={process_index} must be below process_count={process_count} "
                     "(pass jax.process_index() and jax.process_count()).")
  if num_epochs is not None:
    num_epochs = shapes_source.check_int("num_epochs", num_epochs, 1)
  if tokenizer is not None and context_length is None:
    raise ValueError("a tokenizer needs context_length (the text encoder's number of tokens), e.g. 32.")
  if tokenizer is not None:
    context_length = shapes_source.check_int("context_length", context_length, 1)
  num_threads = shapes_source.check_int("num_threads", num_threads, 0)
  prefetch_buffer_size = shapes_source.check_int("prefetch_buffer_size", prefetch_buffer_size, 0)
  if image_size is not None:
    image_size = shapes_source.check_int("image_size", image_size, 1)
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


__all__ = ["DATA_DEFAULTS", "SHAPES_SPLITS", "SOURCE_NAMES", "create_dataset", "create_iterator",
           "data_setting", "downsample", "make_source", "resize_and_crop"]
