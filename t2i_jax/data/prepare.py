"""Downloads and prepares a real dataset as TFDS array_record files, once, for `tfds_sources.open_source`.

  pip install -e ".[prepare]"     # TensorFlow, on a machine with network access
  python -m t2i_jax.data.prepare --dataset cifar10 [--data_dir DIR]

TFDS's builders for these datasets need TensorFlow to encode the downloaded
images (and, for coco_captions, to describe its features), so this step runs
where TensorFlow is installed; training and sampling then read the files with
grain and pillow alone. The files go to DIR/<tfds name>/<version>/ (DIR
defaults to $TFDS_DATA_DIR or ~/tensorflow_datasets); copy that folder to the
training machines' data_dir if they are other machines. A dataset already
prepared there is reused, not downloaded again.

Downloads, roughly: cifar10 160 MB; imagenet_resized/64x64 13 GB (image-net.org's
downsampled ImageNet); coco_captions 26 GB (TFDS's COCO 2014 builder fetches the
train, val and test image archives), and as much again extracted while preparing.
"""

import argparse
import importlib.util
import os
import sys
from typing import Optional, Sequence

from t2i_jax.data import tfds_sources


def require_tensorflow(name: str, data_dir: Optional[str] = None) -> None:
  """Raises a RuntimeError saying how to install TensorFlow when it is not importable."""
  if importlib.util.find_spec("tensorflow") is None:
    raise RuntimeError(
        f"preparing {name} needs TensorFlow, which is not installed in this environment (TFDS's builder uses it "
        "to encode the downloaded images; reading the prepared files later does not). On a machine with network "
        "access, install the prepare extra and rerun:\n"
        f"  pip install -e \".[prepare]\"\n  {tfds_sources.prepare_command(name, data_dir)}")


def prepare(name: str, data_dir: Optional[str] = None) -> str:
  """Runs the TFDS builder's download_and_prepare for `name` in array_record format.

  Args:
    name: one of `tfds_sources.SUPPORTED`, e.g. "cifar10".
    data_dir: TFDS data directory; default $TFDS_DATA_DIR or ~/tensorflow_datasets.

  Returns:
    The prepared version folder (data_dir/<tfds name>/<version>).

  Raises:
    ValueError: unknown name, or data_dir already holds the dataset in a
      format without random access (prepared by tfds.load); nothing is deleted.
    RuntimeError: TensorFlow is not installed.
  """
  dataset = tfds_sources.spec(name)
  data_dir = os.fspath(data_dir) if data_dir else tfds_sources.default_data_dir()
  require_tensorflow(name, data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(dataset.tfds_name, data_dir=data_dir, file_format=tfds_sources.FILE_FORMAT)
  builder.download_and_prepare()
  # An earlier tfds.load in the same data_dir leaves TFRecord files, which download_and_prepare
  # reuses as they are; grain needs array_record.
  formats = {str(getattr(f, "value", f)) for f in builder.info.available_file_formats()}
  if tfds_sources.FILE_FORMAT not in formats:
    raise ValueError(f"{name} is already prepared in {builder.data_dir} as {sorted(formats)}, which grain cannot "
                     "read at random; prepare it into another data_dir with --data_dir.")
  return os.fspath(builder.data_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line entry point; returns the process exit status."""
  parser = argparse.ArgumentParser(
      prog=f"python -m {tfds_sources.PREPARE_MODULE}",
      description="Download and prepare a dataset as TFDS array_record files (needs TensorFlow and network).")
  parser.add_argument("--dataset", required=True, choices=tfds_sources.SUPPORTED, help="dataset to prepare")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  args = parser.parse_args(argv)
  data_dir = args.data_dir or tfds_sources.default_data_dir()
  try:
    path = prepare(args.dataset, data_dir)
  except (RuntimeError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{args.dataset} is prepared in {path}; train with data.name={args.dataset!r}, data.data_dir={data_dir!r}.")
  return 0

if __name__ == "__main__":
  sys.exit(main())
