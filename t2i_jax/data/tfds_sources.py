"""Random-access sources over prepared TFDS datasets (CIFAR-10, ImageNet resized, COCO captions), no TensorFlow.

`open_source(name, split, data_dir)` reads the array_record files that
`python -m t2i_jax.data.prepare --dataset NAME` wrote (that step needs
TensorFlow and network, once) and returns a source for
`input_pipeline.create_iterator`: `len(src)` examples, `src[i]` a dict of numpy
values with this project's keys:

  image    uint8 [H, W, 3]: 32x32 for cifar10, SxS for imagenet_resized/SxS,
           any size for coco_captions (grayscale and CMYK JPEGs become RGB)
  label    int32 scalar, the class (cifar10 0..9, imagenet_resized 0..999)
  caption  bytes, for coco_captions: caption `i % n` of the image's n captions
  captions object array [n] of bytes, for coco_captions: all of them
  index    int32 scalar, i

Captions: each COCO image has 5 to 7. The source itself is a pure function of
i, so "caption" is a fixed one of them (`i % n`, which uses every position of
the caption lists equally over the dataset) for code that reads the source
directly. Training should see every caption, a different one each epoch, and a
per-epoch choice needs the pipeline's seeded random stream, so the source also
hands over "captions" and `input_pipeline.create_iterator` replaces "caption"
with one of them drawn from that stream (and drops "captions", whose length
varies and would not batch).

The datasets are opened with `tfds.builder_from_directory`, from the files
alone: TFDS's own coco_captions builder needs TensorFlow even to describe its
features, and the files carry everything needed to read them. Images are
decoded here with pillow (TFDS is told to skip decoding them) so that every
JPEG comes back as RGB whatever its colour mode.
"""

import dataclasses
import io
import os
import re
import shlex
from typing import Dict, Optional

import numpy as np
from etils import epath

PREPARE_MODULE = "t2i_jax.data.prepare"
FILE_FORMAT = "array_record"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How one supported dataset is stored by TFDS and what it yields.

  Attributes:
    tfds_name: TFDS name with config, the folder under data_dir ("coco_captions/2014").
    text: True for a captioned dataset ("caption"), False for a labelled one ("label").
    splits: this project's split names -> TFDS split names.
  """
  tfds_name: str
  text: bool
  splits: Dict[str, str]


_CLASS_SPLITS_TEST = {"train": "train", "test": "test", "validation": "test"}
# ImageNet's test labels are not public; its validation set is the standard evaluation set.
_CLASS_SPLITS_VAL = {"train": "train", "validation": "validation", "test": "validation"}
# Karpathy & Li splits: "train" is exactly COCO train2014, and "val", "test", "restval" partition
# val2014. Training on "train" alone keeps val2014 (the usual FID reference) unseen; add
# "train+restval" by name for the larger captioning-style training set.
_COCO_SPLITS = {"train": "train", "validation": "val", "test": "test"}

DATASETS: Dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", False, _CLASS_SPLITS_TEST),
    **{f"imagenet_resized/{s}x{s}": DatasetSpec(f"imagenet_resized/{s}x{s}", False, _CLASS_SPLITS_VAL)
       for s in (8, 16, 32, 64)},
    "coco_captions": DatasetSpec("coco_captions/2014", True, _COCO_SPLITS),
}
SUPPORTED = tuple(DATASETS)


def spec(name: str) -> DatasetSpec:
  """The `DatasetSpec` of a supported dataset; a ValueError lists the supported names otherwise."""
  if name not in DATASETS:
    raise ValueError(f"dataset name={name!r} is not supported; use one of {list(SUPPORTED)} "
                     "(or 'shapes' / 'shapes_rendered' through input_pipeline.make_source).")
  return DATASETS[name]


def default_data_dir() -> str:
  """TFDS's default data directory: $TFDS_DATA_DIR if set, else ~/tensorflow_datasets (read at call time)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def prepare_command(name: str, data_dir: Optional[str] = None) -> str:
  """The shell command that prepares `name` under `data_dir` (see prepare.py)."""
  command = f"python -m {PREPARE_MODULE} --dataset {shlex.quote(name)}"
  return command if data_dir is None else f"{command} --data_dir {shlex.quote(os.fspath(data_dir))}"


def _version_key(version: str):
  return tuple(int(part) for part in version.split("."))


def prepared_dir(name: str, data_dir: Optional[str] = None) -> Optional[epath.Path]:
  """The newest prepared version folder of `name` under data_dir, or None; only lists, never writes.

  A version folder counts once TFDS has finished it (dataset_info.json and
  features.json present); an interrupted preparation leaves only an
  "incomplete.*" folder, which is ignored.
  """
  root = epath.Path(data_dir or default_data_dir()).joinpath(*spec(name).tfds_name.split("/"))
  if not root.is_dir():
    return None
  versions = [p.name for p in root.iterdir()
              if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / "dataset_info.json").exists()
              and (p / "features.json").exists()]
  return root / max(versions, key=_version_key) if versions else None


def _missing_message(name: str, data_dir: str) -> str:
  folder = os.path.join(data_dir, *spec(name).tfds_name.split("/"))
  return (f"dataset {name!r} is not prepared in data_dir={data_dir!r} (no finished version folder under "
          f"{folder}). Prepare it once, with TensorFlow and network access (pip install -e \".[prepare]\"):\n"
          f"  {prepare_command(name, data_dir)}\n"
          f"or prepare it on another machine and copy its {spec(name).tfds_name} folder to {folder}. "
          "Reading it needs no TensorFlow.")


def _decode_image(data: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  with Image.open(io.BytesIO(data)) as image:
    # convert("RGB") maps grayscale (COCO has some), palette and CMYK images to proper RGB.
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), np.uint8)


class TfdsSource:
  """Random-access source over one split of a prepared TFDS dataset, with the project's keys.

  Made by `open_source`; pickles to a few kilobytes (the array_record reader
  reopens its files), so grain worker processes can hold a copy.

  Attributes:
    name: the dataset name given to `open_source`.
    split: the TFDS split (or split expression) read.
    num_classes: classes of "label" for the labelled datasets, else None.
  """

  def __init__(self, name: str, split: str, builder):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    self.name, self.split, self._text = name, split, spec(name).text
    self.num_classes = None if self._text else int(builder.info.features["label"].num_classes)
    self._source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                                          file_format=FILE_FORMAT)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index) -> Dict[str, np.ndarray]:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
      raise TypeError(f"{self.name} source indices are integers, got {index!r}.")
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} is out of range for {self!r}.")
    raw = self._source[int(index)]
    example = {"image": _decode_image(raw["image"])}
    if self._text:
      captions = np.array([c if isinstance(c, bytes) else str(c).encode("utf-8") for c in raw["captions"]["text"]],
                          dtype=object)
      if len(captions) == 0:
        raise ValueError(f"{self.name} {self.split}[{index}] has no captions; the files are not COCO captions "
                         f"as TFDS prepares them, prepare them again with: {prepare_command(self.name)}")
      example["caption"] = captions[int(index) % len(captions)]
      example["captions"] = captions
    else:
      example["label"] = np.int32(raw["label"])
    example["index"] = np.int32(index)
    return example

  def __repr__(self) -> str:
    return f"TfdsSource(name={self.name!r}, split={self.split!r}, num_examples={len(self)})"


def open_source(name: str, split: str, data_dir: Optional[str] = None) -> TfdsSource:
  """Opens one split of a prepared dataset for random access, without TensorFlow.

  Args:
    name: "cifar10", "imagenet_resized/64x64" (also 8x8, 16x16, 32x32) or "coco_captions".
    split: "train", "test" or "validation", mapped to the dataset's own splits
      (cifar10: validation -> test; imagenet_resized: test -> validation, the
      labelled held-out set; coco_captions: validation -> val, Karpathy splits).
      Anything else goes to TFDS as is: a native name ("restval"), a sum
      ("train+restval") or a slice ("train[:1000]").
    data_dir: TFDS data directory holding the prepared files; default
      $TFDS_DATA_DIR or ~/tensorflow_datasets. Local or any path etils.epath reads.

  Returns:
    A `TfdsSource`: `len(src)` examples; `src[i]` a dict with "image" uint8
    [H, W, 3], "index" int32, and "label" int32 (class datasets) or "caption"
    bytes and "captions" object array [n] of bytes (coco_captions).

  Raises:
    ValueError: unknown name, unknown split, or files not in array_record format.
    FileNotFoundError: the dataset is not prepared in data_dir; the message has
      the command that prepares it. Nothing is written either way.
  """
  dataset = spec(name)
  if not isinstance(split, str) or not split:
    raise ValueError(f"split={split!r} must be a non-empty string such as 'train', 'test' or 'validation'.")
  data_dir = os.fspath(data_dir) if data_dir else default_data_dir()
  path = prepared_dir(name, data_dir)
  if path is None:
    raise FileNotFoundError(_missing_message(name, data_dir))

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder_from_directory(path)
  formats = {str(getattr(f, "value", f)) for f in builder.info.available_file_formats()}
  if FILE_FORMAT not in formats:
    raise ValueError(f"{name} in {os.fspath(path)} is stored as {sorted(formats)}, which has no random access; "
                     f"prepare an array_record copy in another data_dir with: "
                     f"{prepare_command(name, '<new data_dir>')}")
  tfds_split = dataset.splits.get(split, split)
  try:
    return TfdsSource(name, tfds_split, builder)
  except (ValueError, KeyError) as e:
    raise ValueError(
        f"split={split!r} does not select data of {name} (its splits are {sorted(builder.info.splits)}; "
        f"{dict(dataset.splits)} are mapped; TFDS expressions like 'train[:1000]' or 'train+test' also "
        f"work): {e}") from e


__all__ = ["DATASETS", "DatasetSpec", "SUPPORTED", "TfdsSource", "default_data_dir", "open_source",
           "prepare_command", "prepared_dir", "spec"]
