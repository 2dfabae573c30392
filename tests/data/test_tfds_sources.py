"""Real-dataset sources and their pipeline, on tiny stand-ins written with the real datasets' TFDS features.

The stand-ins are GeneratorBasedBuilders named like TFDS's cifar10,
imagenet_resized/64x64 and coco_captions/2014, with the same feature
structure (coco: JPEG image of any size, filename, id, objects with boxes,
captions with ids), written as array_record files into a temporary data_dir by
TFDS itself, without TensorFlow or network; `open_source` then reads them from
the files alone, as it reads the real ones.
"""

import importlib.util
import io
import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from t2i_jax.data import captions as captions_lib
from t2i_jax.data import input_pipeline, prepare, tfds_sources
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.data.input_pipeline import create_iterator

CIFAR_SPLITS = {"train": 12, "test": 4}
# (height, width) of the stand-in COCO images: landscape, portrait, square, one grayscale and one CMYK JPEG.
COCO_SIZES = [(24, 40), (36, 24), (30, 30), (24, 33), (28, 24), (24, 36)]
COCO_MODES = ["RGB", "RGB", "RGB", "L", "CMYK", "RGB"]
COCO_SPLITS = {"train": 6, "val": 2, "test": 2, "restval": 3}


def cifar_image(split: str, i: int) -> np.ndarray:
  return np.random.default_rng([len(split), i]).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def cifar_label(split: str, i: int) -> int:
  return (3 * i + len(split)) % 10


def coco_jpeg(split: str, i: int) -> bytes:
  h, w = COCO_SIZES[i % len(COCO_SIZES)]
  yy, xx = np.mgrid[:h, :w]
  # Smooth ramps with a per-image phase: distinct images whose JPEG pixels still vary across every crop.
  rgb = np.stack([(7 * xx + 3 * yy + 40 * i) % 256, (5 * yy + 11 * i) % 256, (4 * xx + 2 * yy) % 256], -1)
  image = Image.fromarray(rgb.astype(np.uint8)).convert(COCO_MODES[i % len(COCO_MODES)])
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=90)
  return buffer.getvalue() + bytes(len(split))  # trailing bytes make the splits' files differ


def coco_captions(split: str, i: int) -> list:
  colors, shapes, sizes = captions_lib.COLORS, captions_lib.SHAPES, captions_lib.SIZES
  n = 5 + i % 3  # COCO images have 5 to 7 captions
  return [f"a {sizes[(i + k) % 2]} {colors[(i + k) % 6]} {shapes[(i + 2 * k) % 5]} in the middle"
          for k in range(n)]


def decoded(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class FakeCifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """cifar10's features (tensorflow_datasets/image_classification/cifar.py), a few random images."""
  name = "cifar10"
  VERSION = tfds.core.Version("3.0.2")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "image": tfds.features.Image(shape=(32, 32, 3)),
        "label": tfds.features.ClassLabel(num_classes=10)}), supervised_keys=("image", "label"),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split, n) for split, n in CIFAR_SPLITS.items()}

  def _generate_examples(self, split, n):
    for i in range(n):
      yield i, {"id": f"{split}_{i}", "image": Image.fromarray(cifar_image(split, i)), "label": cifar_label(split, i)}


class FakeImagenet64(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """imagenet_resized/64x64's features, two images."""
  name = "imagenet_resized"
  VERSION = tfds.core.Version("0.1.1")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="64x64")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(64, 64, 3)), "label": tfds.features.ClassLabel(num_classes=1000)}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(2), "validation": self._generate_examples(1)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": Image.fromarray(np.full((64, 64, 3), 10 * i, np.uint8)), "label": 998 - i}


class FakeCocoCaptions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """coco_captions/2014's features (coco.py + coco_captions.py), with JPEG bytes stored as they are."""
  name = "coco_captions"
  VERSION = tfds.core.Version("1.1.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "image/filename": tfds.features.Text(),
        "image/id": np.int64,
        "objects": tfds.features.Sequence({
            "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(num_classes=80), "is_crowd": np.bool_}),
        "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64}),
    }), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split, n) for split, n in COCO_SPLITS.items()}

  def _generate_examples(self, split, n):
    for i in range(n):
      box = {"id": i, "area": 12, "bbox": tfds.features.BBox(0.1, 0.2, 0.5, 0.6), "label": i % 80, "is_crowd": False}
      yield i, {"image": coco_jpeg(split, i), "image/filename": f"COCO_{split}_{i:012d}.jpg", "image/id": i,
                "objects": [box] * (i % 2),
                "captions": [{"text": t, "id": 100 * i + k} for k, t in enumerate(coco_captions(split, i))]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  for cls in (FakeCifar10, FakeImagenet64, FakeCocoCaptions):
    cls(data_dir=str(path), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return str(path)


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.load_tokenizer("shapes")


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def to_float(image):
  return image.astype(np.float32) / 127.5 - 1.0


def test_cifar10_examples_round_trip(data_dir):
  for split, n in CIFAR_SPLITS.items():
    src = tfds_sources.open_source("cifar10", split, data_dir)
    assert len(src) == n and src.num_classes == 10
    for i in range(n):
      ex = src[i]
      assert set(ex) == {"image", "label", "index"}
      assert ex["image"].dtype == np.uint8 and ex["image"].shape == (32, 32, 3)
      np.testing.assert_array_equal(ex["image"], cifar_image(split, i))
      assert ex["label"].dtype == np.int32 and int(ex["label"]) == cifar_label(split, i)
      assert int(ex["index"]) == i
  # cifar10 has no validation split: its test split is the held-out set.
  val = tfds_sources.open_source("cifar10", "validation", data_dir)
  assert len(val) == 4 and int(val[3]["label"]) == cifar_label("test", 3)
  with pytest.raises(IndexError):
    val[4]
  assert "tensorflow" not in sys.modules


def test_imagenet_resized_labels_and_split_mapping(data_dir):
  src = tfds_sources.open_source("imagenet_resized/64x64", "train", data_dir)
  assert src.num_classes == 1000 and [int(src[i]["label"]) for i in range(2)] == [998, 997]
  assert src[1]["image"].shape == (64, 64, 3) and (src[1]["image"] == 10).all()
  assert len(tfds_sources.open_source("imagenet_resized/64x64", "test", data_dir)) == 1  # test -> validation


def test_coco_captions_examples(data_dir):
  src = tfds_sources.open_source("coco_captions", "train", data_dir)
  assert len(src) == COCO_SPLITS["train"] and src.num_classes is None
  for i in range(len(src)):
    ex = src[i]
    assert set(ex) == {"image", "caption", "captions", "index"}
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == COCO_SIZES[i] + (3,)
    np.testing.assert_array_equal(ex["image"], decoded(coco_jpeg("train", i)))  # grayscale, CMYK -> RGB
    texts = [c.encode() for c in coco_captions("train", i)]
    assert list(ex["captions"]) == texts and ex["caption"] == texts[i % len(texts)]
  gray, cmyk = src[3]["image"], src[4]["image"]
  assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()  # three equal channels
  assert not (cmyk[..., 0] == cmyk[..., 2]).all()  # CMYK converted to RGB colours, not read as channels
  # validation -> Karpathy "val"; native names and TFDS split expressions pass through.
  assert len(tfds_sources.open_source("coco_captions", "validation", data_dir)) == COCO_SPLITS["val"]
  assert len(tfds_sources.open_source("coco_captions", "train+restval", data_dir)) == 9
  restval = tfds_sources.open_source("coco_captions", "restval[1:]", data_dir)
  assert len(restval) == 2 and restval[0]["captions"][0] == coco_captions("restval", 1)[0].encode()
  with pytest.raises(ValueError, match=r"split='valid'.*restval"):
    tfds_sources.open_source("coco_captions", "valid", data_dir)


def test_missing_dataset_and_unknown_name(data_dir, tmp_path):
  empty = tmp_path / "no_tfds_here"
  with pytest.raises(FileNotFoundError) as info:
    tfds_sources.open_source("coco_captions", "train", str(empty))
  message = str(info.value)
  assert str(empty) in message
  assert f"python -m t2i_jax.data.prepare --dataset coco_captions --data_dir {empty}" in message
  assert 'pip install -e ".[prepare]"' in message
  assert not empty.exists()  # nothing written
  # An interrupted preparation (TFDS's incomplete.* folder) is not a prepared dataset.
  (tmp_path / "partial" / "cifar10" / "incomplete.AB12CD_3.0.2").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="--dataset cifar10"):
    input_pipeline.make_source({"name": "cifar10", "image_size": 32, "data_dir": str(tmp_path / "partial")})
  with pytest.raises(ValueError, match=r"mnist.*cifar10.*coco_captions"):
    tfds_sources.open_source("mnist", "train", data_dir)
  with pytest.raises(ValueError, match=r"mnist.*'shapes'.*coco_captions"):
    input_pipeline.make_source({"name": "mnist", "image_size": 32})


def test_make_source_reads_real_names(data_dir):
  src = input_pipeline.make_source({"name": "cifar10", "image_size": 32, "data_dir": data_dir}, "test")
  assert len(src) == CIFAR_SPLITS["test"]
  np.testing.assert_array_equal(src[2]["image"], cifar_image("test", 2))


def test_prepare_without_tensorflow_says_how(tmp_path, capsys):
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here; preparing would download")
  assert prepare.main(["--dataset", "cifar10", "--data_dir", str(tmp_path / "d")]) == 1
  err = capsys.readouterr().err
  assert "needs TensorFlow" in err and 'pip install -e ".[prepare]"' in err
  assert f"python -m t2i_jax.data.prepare --dataset cifar10 --data_dir {tmp_path / 'd'}" in err
  assert not (tmp_path / "d").exists()


def test_prepare_writes_array_record_that_open_source_reads(tmp_path, monkeypatch):
  # The stand-in replaces TFDS's cifar10 builder: all of prepare() runs but the download and TensorFlow.
  calls = []

  def fake_builder(name, **kwargs):
    calls.append((name, kwargs))
    return FakeCifar10(**kwargs)

  monkeypatch.setattr(prepare, "require_tensorflow", lambda *args: None)
  monkeypatch.setattr(tfds, "builder", fake_builder)
  path = prepare.prepare("cifar10", str(tmp_path))
  assert calls == [("cifar10", {"data_dir": str(tmp_path), "file_format": "array_record"})]
  assert path == str(tmp_path / "cifar10" / "3.0.2")
  src = tfds_sources.open_source("cifar10", "test", str(tmp_path))
  np.testing.assert_array_equal(src[1]["image"], cifar_image("test", 1))
  with pytest.raises(ValueError, match="mnist"):
    prepare.prepare("mnist", str(tmp_path))


def test_cifar10_pipeline_resizes_and_keeps_labels(data_dir):
  src = tfds_sources.open_source("cifar10", "train", data_dir)
  batches = list(create_iterator(src, batch_size=4, seed=0, num_epochs=1, image_size=16))
  assert len(batches) == 3
  seen = []
  for b in batches:
    assert b["image"].shape == (4, 16, 16, 3) and b["label"].dtype == np.int32
    for image, label, i in zip(b["image"], b["label"], b["index"]):
      expected = np.asarray(Image.fromarray(cifar_image("train", int(i))).resize((16, 16), Image.Resampling.BICUBIC))
      np.testing.assert_array_equal(image, to_float(expected))
      assert int(label) == cifar_label("train", int(i))
      seen.append(int(i))
  assert sorted(seen) == list(range(12))
  # At the stored size nothing is resampled: the batch is the source's pixels.
  b = next(create_iterator(src, batch_size=4, seed=0, image_size=32))
  np.testing.assert_array_equal(b["image"][0], to_float(cifar_image("train", int(b["index"][0]))))


def test_coco_pipeline_centre_crops_draws_captions_and_tokenises(data_dir, tok):
  src = tfds_sources.open_source("coco_captions", "train", data_dir)
  it = create_iterator(src, batch_size=3, seed=1, image_size=24, tokenizer=tok, context_length=16)
  drawn = {}
  for b in take(it, 8):  # four epochs
    assert b["image"].shape == (3, 24, 24, 3) and "captions" not in b
    tokens, mask = tokenizer_lib.tokenize(tok, [c.decode() for c in b["caption"]], 16)
    np.testing.assert_array_equal(b["tokens"], tokens)
    np.testing.assert_array_equal(b["token_mask"], mask)
    assert (tokens[mask] != tok.unk_token_id).all()
    for image, caption, i in zip(b["image"], b["caption"], b["index"]):
      i = int(i)
      assert caption.decode() in coco_captions("train", i)
      drawn.setdefault(i, set()).add(caption)
      pixels = decoded(coco_jpeg("train", i))
      h, w = pixels.shape[:2]
      if min(h, w) == 24:  # only a centre crop
        top, left = (h - 24) // 2, (w - 24) // 2
        expected = pixels[top:top + 24, left:left + 24]
      else:  # shorter side to 24 with pillow's bicubic, then the centre
        new_w, new_h = (round(w * 24 / h), 24) if h <= w else (24, round(h * 24 / w))
        resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BICUBIC))
        top, left = (new_h - 24) // 2, (new_w - 24) // 2
        expected = resized[top:top + 24, left:left + 24]
      np.testing.assert_array_equal(image, to_float(expected), err_msg=f"example {i}")
  assert sorted(drawn) == list(range(6))
  assert sum(len(c) > 1 for c in drawn.values()) >= 3  # a new caption draw every epoch


def crop_offsets(batch, src):
  """(top, left) of each image of a batch inside its source image, resized when its shorter side is not 24."""
  offsets = []
  for image, i in zip(batch["image"], batch["index"]):
    pixels = src[int(i)]["image"]
    if min(pixels.shape[:2]) != 24:  # the square one: resized to 24 x 24, no room to move
      assert pixels.shape[0] == pixels.shape[1]
      pixels = np.asarray(Image.fromarray(pixels).resize((24, 24), Image.Resampling.BICUBIC))
    pixels = to_float(pixels)
    h, w = pixels.shape[:2]
    found = [(t, l) for t in range(h - 23) for l in range(w - 23)
             if np.array_equal(pixels[t:t + 24, l:l + 24], image)]
    assert len(found) == 1, (int(i), found)
    offsets.append(found[0])
  return offsets


def test_coco_random_crops_are_seeded_and_checkpointable(data_dir):
  src = tfds_sources.open_source("coco_captions", "train", data_dir)
  kwargs = dict(batch_size=3, seed=7, image_size=24, random_crop=True)
  batches = take(create_iterator(src, **kwargs), 6)
  offsets = [o for b in batches for o in crop_offsets(b, src)]
  assert len(set(offsets)) >= 6  # uniform offsets: many distinct ones in 18 crops
  # Example 0 (24 x 40) has 17 possible offsets; it is cropped in 3 epochs, not always at the same place.
  by_example = {}
  for b in batches:
    for (t, l), i in zip(crop_offsets(b, src), b["index"]):
      by_example.setdefault(int(i), []).append((t, l))
  assert len(set(by_example[0])) > 1 and all(t == 0 for t, _ in by_example[0])
  assert_batches_equal(batches, take(create_iterator(src, **kwargs), 6))
  other = take(create_iterator(src, **dict(kwargs, seed=8)), 6)
  assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(batches, other))
  it = create_iterator(src, **kwargs)
  take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  restored = create_iterator(src, **kwargs)
  restored.set_state(state)
  assert_batches_equal(take(restored, 4), batches[2:])
