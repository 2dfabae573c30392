"""Captioned shapes as a TFDS dataset in array_record files, built locally without TensorFlow.

`build_if_missing(data_dir)` renders the splits with `shapes.sample_example`
(nothing is downloaded) and writes them with TFDS's array_record writer; it
returns TFDS data sources (`tfds.data_source`-style random access, read through
grain by `input_pipeline.create_iterator`). Writing and reading need
tensorflow-datasets, array_record and pillow, not TensorFlow: images go in as PIL
images, which TFDS encodes to PNG with pillow (a numpy array would send them
through TensorFlow's PNG encoder), and come back decoded with pillow.

Example i of a split's data source is example i of the split's stream for the
config's seed, byte for byte what `shapes_source.ShapesSource(split, seed,
num_examples, image_size)[i]` returns: the builder keeps generation order
(DatasetInfo's `disable_shuffling`) and PNG is lossless.

Multi-host: the data are a pure function of the config, so each host may
build its own copy in a local directory; hosts sharing one directory should let
process 0 build while the others wait at a barrier, since TFDS does not lock.
"""

import contextlib
import dataclasses
import io
import os
from typing import Dict, Optional

import numpy as np
import tensorflow_datasets as tfds

from t2i_jax.data import shapes, shapes_source

NAME = "captioned_shapes"
FILE_FORMAT = "array_record"


@dataclasses.dataclass
class CaptionedShapesConfig(tfds.core.BuilderConfig):
  """A split size and rendering choice; its name is derived from the fields when not given.

  Attributes:
    image_size: side in pixels, 16..64.
    seed: the example stream of every split (`shapes.sample_example`'s seed).
    num_train, num_test, num_heldout: examples per split (a split with 0 is left out).
  """
  name: str = ""  # derived from the fields below when empty
  image_size: int = 32
  seed: int = 0
  num_train: int = 2000
  num_test: int = 500
  num_heldout: int = 500

  def __post_init__(self):
    shapes._check_image_size(self.image_size)  # pylint: disable=protected-access
    for field in ("seed", "num_train", "num_test", "num_heldout"):
      shapes_source.check_int(field, getattr(self, field), 0)
    if self.num_train + self.num_test + self.num_heldout == 0:
      raise ValueError("all three split sizes are 0; ask for at least one example (e.g. num_train=2000).")
    if not self.name:
      self.name = config_name(self.image_size, self.seed, self.num_train, self.num_test, self.num_heldout)
    if not self.description:
      self.description = (f"{self.image_size}x{self.image_size} images, seed {self.seed}, "
                          f"{self.num_train}/{self.num_test}/{self.num_heldout} train/test/heldout examples.")


def config_name(image_size: int, seed: int, num_train: int, num_test: int, num_heldout: int) -> str:
  """The config name that `CaptionedShapesConfig` derives, e.g. "s32_seed0_2000_500_500"."""
  return f"s{image_size}_seed{seed}_{num_train}_{num_test}_{num_heldout}"


class CaptionedShapes(tfds.core.GeneratorBasedBuilder):
  """Captioned shapes: one or two coloured shapes, an English caption and the structured ground truth.

  Features per example (the keys and dtypes of `shapes_source.ShapesSource`):
    image uint8 [S, S, 3] (PNG), caption text, colors / shapes / sizes /
    positions int32 [2] (-1 where absent), centers float32 [2, 2], relation,
    num_objects, index int32 scalars.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: shapes.py renderer, train/test/heldout splits."}
  BUILDER_CONFIGS = [CaptionedShapesConfig()]
  DEFAULT_CONFIG_NAME = BUILDER_CONFIGS[0].name

  def _info(self) -> tfds.core.DatasetInfo:
    size, k = self.builder_config.image_size, shapes_source.MAX_OBJECTS
    ints = lambda: tfds.features.Tensor(shape=(k,), dtype=np.int32)
    scalar = lambda: tfds.features.Scalar(dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "caption": tfds.features.Text(),
            "colors": ints(), "shapes": ints(), "sizes": ints(), "positions": ints(),
            "centers": tfds.features.Tensor(shape=(k, 2), dtype=np.float32),
            "relation": scalar(), "num_objects": scalar(), "index": scalar(),
        }),
        supervised_keys=("caption", "image"),
        # Keep generation order, so that example i on disk is example i of the stream.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # rendered locally: nothing to download
    cfg = self.builder_config
    sizes = {"train": cfg.num_train, "test": cfg.num_test, "heldout": cfg.num_heldout}
    return {split: self._generate_examples(split, n) for split, n in sizes.items() if n > 0}

  def _generate_examples(self, split: str, num_examples: int):
    from PIL import Image  # pylint: disable=g-import-not-at-top

    cfg = self.builder_config
    for i in range(num_examples):
      ex = shapes_source.example_dict(shapes.sample_example(split, cfg.seed, i, cfg.image_size))
      ex["image"] = Image.fromarray(ex["image"])  # PIL -> PNG through pillow, not TensorFlow
      ex["caption"] = ex["caption"].decode("utf-8")
      yield i, ex


def _config(image_size, seed, num_train, num_test, num_heldout) -> CaptionedShapesConfig:
  return CaptionedShapesConfig(image_size=image_size, seed=seed, num_train=num_train, num_test=num_test,
                               num_heldout=num_heldout)


def builder(data_dir: str, *, image_size: int = 32, seed: int = 0, num_train: int = 2000, num_test: int = 500,
            num_heldout: int = 500) -> CaptionedShapes:
  """The builder for this config under `data_dir` (files in data_dir/captioned_shapes/<config name>/1.0.0)."""
  if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
    raise ValueError(f"data_dir={data_dir!r} must be a directory path, e.g. '<workdir>/tfds'.")
  config = _config(image_size, seed, num_train, num_test, num_heldout)
  # TFDS refuses a config object named like a predefined one; the predefined one goes by name.
  predefined = CaptionedShapes.builder_configs.get(config.name)
  return CaptionedShapes(config=config if predefined is None else config.name, data_dir=os.fspath(data_dir),
                         file_format=FILE_FORMAT)


def build_if_missing(data_dir: str, *, image_size: int = 32, seed: int = 0, num_train: int = 2000,
                     num_test: int = 500, num_heldout: int = 500) -> Dict[str, object]:
  """Renders and writes the dataset unless it is already there; returns its data sources.

  Args:
    data_dir: TFDS data directory (created if missing).
    image_size, seed, num_train, num_test, num_heldout: see `CaptionedShapesConfig`.

  Returns:
    {split: data source} for the non-empty splits; `len(src)` examples and
    `src[i]` a dict of numpy arrays, the same as `ShapesSource(split, seed, n, image_size)[i]`.
  """
  b = builder(data_dir, image_size=image_size, seed=seed, num_train=num_train, num_test=num_test,
              num_heldout=num_heldout)
  if not b.is_prepared():
    print(f"rendering captioned shapes ({num_train:,} / {num_test:,} / {num_heldout:,} train / test / heldout "
          f"examples, {image_size} px) into {b.data_dir}, once", flush=True)
    # TFDS's progress bars and its "downloaded and prepared" notice (printed, not logged) say nothing here.
    tfds.display_progress_bar(False)
    try:
      with contextlib.redirect_stdout(io.StringIO()):
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    finally:
      tfds.display_progress_bar(True)
  return b.as_data_source()


def data_source(data_dir: str, split: str, *, image_size: int = 32, seed: int = 0, num_train: int = 2000,
                num_test: int = 500, num_heldout: int = 500):
  """One split's data source of an already built dataset (see `build_if_missing`).

  Raises:
    ValueError: the dataset has not been built in `data_dir`, or lacks the split.
  """
  b = builder(data_dir, image_size=image_size, seed=seed, num_train=num_train, num_test=num_test,
              num_heldout=num_heldout)
  if not b.is_prepared():
    raise ValueError(f"captioned shapes {b.builder_config.name!r} is not built in {data_dir!r}; "
                     "call shapes_tfds.build_if_missing with the same arguments first.")
  sources = b.as_data_source()
  if split not in sources:
    raise ValueError(f"split={split!r} is not in this build (it has {sorted(sources)}); "
                     "build it with a non-zero size for that split.")
  return sources[split]


def tfds_name(image_size: int = 32, seed: int = 0, num_train: int = 2000, num_test: int = 500,
              num_heldout: int = 500, version: Optional[str] = None) -> str:
  """The name for `tfds.data_source(name, data_dir=...)`, e.g. "captioned_shapes/s32_seed0_2000_500_500"."""
  name = f"{NAME}/{config_name(image_size, seed, num_train, num_test, num_heldout)}"
  return name if version is None else f"{name}:{version}"


__all__ = ["CaptionedShapes", "CaptionedShapesConfig", "build_if_missing", "builder", "config_name",
           "data_source", "tfds_name"]
