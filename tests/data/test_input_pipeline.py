"""Grain input pipeline over rendered and TFDS captioned shapes: batches, order, sharding, state, tokens."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from t2i_jax.data import input_pipeline, shapes, shapes_source, shapes_tfds
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.data.input_pipeline import create_iterator
from t2i_jax.data.shapes_source import ShapesSource

SIZE = 16


def take(it, n):
  return [next(it) for _ in range(n)]


def epoch_indices(source, **kwargs):
  it = create_iterator(source, num_epochs=1, drop_remainder=False, **kwargs)
  return np.concatenate([b["index"] for b in it])


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.load_tokenizer()


def test_source_example_matches_renderer():
  src = ShapesSource("test", seed=3, num_examples=50, image_size=SIZE)
  assert len(src) == 50
  for i in (0, 7, 49):
    ex, ref = src[i], shapes.sample_example("test", 3, i, SIZE)
    np.testing.assert_array_equal(ex["image"], ref.image)
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (SIZE, SIZE, 3)
    assert ex["caption"] == ref.caption.encode() and int(ex["index"]) == i
    n = len(ref.objects)
    assert int(ex["num_objects"]) == n
    np.testing.assert_array_equal(ex["colors"][:n], [o.color for o in ref.objects])
    np.testing.assert_array_equal(ex["shapes"][:n], [o.shape for o in ref.objects])
    np.testing.assert_array_equal(ex["sizes"][:n], [o.size for o in ref.objects])
    np.testing.assert_allclose(ex["centers"][:n], [o.center for o in ref.objects], rtol=1e-6)
    assert all((ex[k][n:] == -1).all() for k in ("colors", "shapes", "sizes", "positions", "centers"))
    if n == 1:
      assert int(ex["positions"][0]) == ref.objects[0].position and int(ex["relation"]) == -1
    else:
      assert (ex["positions"] == -1).all() and int(ex["relation"]) == ref.relation
  with pytest.raises(IndexError):
    src[50]
  with pytest.raises(ValueError, match="split"):
    ShapesSource("validation")
  with pytest.raises(ValueError, match="image_size"):
    ShapesSource("train", image_size=8)


def test_batch_shapes_dtypes_and_ranges():
  src = ShapesSource("train", seed=0, num_examples=64, image_size=SIZE)
  b = next(create_iterator(src, batch_size=8, seed=0))
  assert b["image"].dtype == np.float32 and b["image"].shape == (8, SIZE, SIZE, 3)
  assert b["image"].min() >= -1.0 and b["image"].max() <= 1.0
  assert b["image"].min() < -0.5 and b["image"].max() > 0.5  # dark background, bright objects
  for k, shape in (("colors", (8, 2)), ("positions", (8, 2)), ("centers", (8, 2, 2)), ("relation", (8,)),
                   ("num_objects", (8,)), ("index", (8,))):
    assert b[k].shape == shape, k
    assert b[k].dtype == (np.float32 if k == "centers" else np.int32), k
  assert b["caption"].shape == (8,)
  for j, i in enumerate(b["index"]):  # the float image is exactly uint8 / 127.5 - 1
    np.testing.assert_array_equal(b["image"][j], src[int(i)]["image"].astype(np.float32) / 127.5 - 1.0)
    assert b["caption"][j] == src[int(i)]["caption"]
  assert set(b["num_objects"]) <= {1, 2}


def test_seed_determinism_and_epoch_reshuffle():
  src = ShapesSource("train", seed=0, num_examples=48, image_size=SIZE)
  a = take(create_iterator(src, batch_size=8, seed=5), 3)
  assert_batches_equal(a, take(create_iterator(src, batch_size=8, seed=5), 3))
  c = take(create_iterator(src, batch_size=8, seed=6), 3)
  assert not np.array_equal(np.concatenate([x["index"] for x in a]), np.concatenate([x["index"] for x in c]))
  # Two epochs: each a permutation of the source, in different orders.
  idx = epoch_indices(src, batch_size=8, seed=5).tolist()
  assert sorted(idx) == list(range(48)) and idx != list(range(48))
  two = np.concatenate([b["index"] for b in create_iterator(src, batch_size=8, seed=5, num_epochs=2)])
  assert sorted(two[:48]) == sorted(two[48:]) == list(range(48)) and list(two[:48]) != list(two[48:])
  assert epoch_indices(src, batch_size=8, seed=5, shuffle=False).tolist() == list(range(48))


class _CountingSource(ShapesSource):
  reads = 0

  def __getitem__(self, index):
    type(self).reads += 1
    return super().__getitem__(index)


def test_cached_source_reads_each_example_once_and_gives_the_same_batches(tok):
  src = _CountingSource("train", seed=0, num_examples=24, image_size=SIZE)
  cached = input_pipeline.CachedSource(src)
  kwargs = dict(batch_size=8, seed=3, num_epochs=3, tokenizer=tok, context_length=20)
  _CountingSource.reads = 0
  from_cache = list(create_iterator(cached, **kwargs))
  assert _CountingSource.reads == 24  # three epochs, each example read once
  _CountingSource.reads = 0
  assert_batches_equal(from_cache, list(create_iterator(src, **kwargs)))
  assert _CountingSource.reads >= 3 * 24
  example = cached[5]
  with pytest.raises(ValueError, match="read-only"):
    example["image"][0, 0, 0] = 1  # a step that wrote into the cache would change the data
  example["caption"] = b"changed"  # the dict handed out is the caller's own
  assert cached[5]["caption"] == src[5]["caption"]


def test_finite_epochs_and_remainder():
  src = ShapesSource("train", seed=0, num_examples=20, image_size=SIZE)
  sizes = [len(b["index"]) for b in create_iterator(src, batch_size=8, seed=0, num_epochs=1)]
  assert sizes == [8, 8]
  sizes = [len(b["index"]) for b in create_iterator(src, batch_size=8, seed=0, num_epochs=1, drop_remainder=False)]
  assert sizes == [8, 8, 4]


@pytest.mark.parametrize("n", [40, 41])
def test_process_shards_are_disjoint_and_cover_the_epoch(n):
  src = ShapesSource("train", seed=0, num_examples=n, image_size=SIZE)
  shards = [set(epoch_indices(src, batch_size=4, seed=1, process_index=p, process_count=2).tolist())
            for p in range(2)]
  assert len(shards[0]) == len(shards[1]) == n // 2
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(range(2 * (n // 2)))  # an odd source drops its last example


def test_state_round_trip(tok):
  src = ShapesSource("train", seed=0, num_examples=32, image_size=SIZE)
  kwargs = dict(batch_size=8, seed=2, tokenizer=tok, context_length=16)
  it = create_iterator(src, **kwargs)
  take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 2)  # crosses the epoch boundary at batch 4
  restored = create_iterator(src, **kwargs)
  restored.set_state(state)
  assert_batches_equal(take(restored, 2), expected)


def test_tokenisation_matches_tokenize(tok):
  src = ShapesSource("train", seed=0, num_examples=32, image_size=SIZE)
  b = next(create_iterator(src, batch_size=8, seed=0, tokenizer=tok, context_length=20))
  tokens, mask = tokenizer_lib.tokenize(tok, [c.decode() for c in b["caption"]], 20)
  assert b["tokens"].dtype == np.int32 and b["token_mask"].dtype == np.bool_
  np.testing.assert_array_equal(b["tokens"], tokens)
  np.testing.assert_array_equal(b["token_mask"], mask)
  assert mask.sum(1).min() >= 5 and (b["tokens"][~mask] == tok.pad_token_id).all()


def test_random_flip_mirrors_some_images():
  src = ShapesSource("train", seed=0, num_examples=64, image_size=SIZE)
  flipped = take(create_iterator(src, batch_size=16, seed=0, random_flip=True), 2)
  plain = take(create_iterator(src, batch_size=16, seed=0), 2)
  n_flipped = 0
  for f, p in zip(flipped, plain):
    np.testing.assert_array_equal(f["index"], p["index"])
    for j in range(16):
      same = np.array_equal(f["image"][j], p["image"][j])
      mirrored = np.array_equal(f["image"][j], p["image"][j][:, ::-1])
      assert same or mirrored
      n_flipped += mirrored and not same
  assert 4 <= n_flipped <= 28
  assert_batches_equal(flipped, take(create_iterator(src, batch_size=16, seed=0, random_flip=True), 2))


def test_bad_arguments_raise_value_errors(tok):
  src = ShapesSource("train", seed=0, num_examples=16, image_size=SIZE)
  with pytest.raises(ValueError, match="process_index"):
    create_iterator(src, batch_size=4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="context_length"):
    create_iterator(src, batch_size=4, seed=0, tokenizer=tok)
  with pytest.raises(ValueError, match="too few"):
    create_iterator(src, batch_size=32, seed=0, num_epochs=1)
  with pytest.raises(ValueError, match="batch_size"):
    create_iterator(src, batch_size=0, seed=0)
  with pytest.raises(ValueError, match="random-access"):
    create_iterator([1, 2].__iter__(), batch_size=1, seed=0)


def test_tfds_build_reads_back_the_rendered_examples(tmp_path):
  import tensorflow_datasets as tfds

  sizes = dict(image_size=SIZE, seed=4, num_train=48, num_test=16, num_heldout=8)
  with pytest.raises(ValueError, match="not built"):
    shapes_tfds.data_source(str(tmp_path), "train", **sizes)
  sources = shapes_tfds.build_if_missing(str(tmp_path), **sizes)
  assert {k: len(v) for k, v in sources.items()} == {"train": 48, "test": 16, "heldout": 8}
  for split, src in sources.items():
    ref = ShapesSource(split, seed=4, num_examples=len(src), image_size=SIZE)
    for i in range(len(src)):
      a, b = src[i], ref[i]
      assert a.keys() == b.keys()
      for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{split}[{i}][{k}]")
  assert all(shapes.contains_heldout_pair(shapes.sample_example("heldout", 4, i, SIZE)) for i in range(8))
  # The same pipeline gives the same batches from either source.
  ref = ShapesSource("train", seed=4, num_examples=48, image_size=SIZE)
  assert_batches_equal(take(create_iterator(sources["train"], batch_size=8, seed=0), 3),
                       take(create_iterator(ref, batch_size=8, seed=0), 3))
  # Plain tfds.data_source reads it too, and a second build reuses the files.
  src = tfds.data_source(shapes_tfds.tfds_name(**sizes), data_dir=str(tmp_path))["test"]
  np.testing.assert_array_equal(src[3]["image"], ShapesSource("test", 4, 16, SIZE)[3]["image"])
  files = sorted(p for p in tmp_path.rglob("*.array_record*"))
  mtimes = [p.stat().st_mtime_ns for p in files]
  shapes_tfds.build_if_missing(str(tmp_path), **sizes)
  assert [p.stat().st_mtime_ns for p in files] == mtimes and len(files) == 3
  assert "tensorflow" not in sys.modules
  with pytest.raises(ValueError, match="split"):
    shapes_tfds.data_source(str(tmp_path), "validation", **sizes)


def test_tfds_config_validation(tmp_path):
  with pytest.raises(ValueError, match="image_size"):
    shapes_tfds.builder(str(tmp_path), image_size=200)
  with pytest.raises(ValueError, match="at least one"):
    shapes_tfds.builder(str(tmp_path), num_train=0, num_test=0, num_heldout=0)
  assert shapes_source.MAX_OBJECTS == 2


class ArraySource:
  """In-memory source of given uint8 images, with their index."""

  def __init__(self, images):
    self.images = images

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "index": np.int32(i)}


def ramp(h, w, phase=0):
  yy, xx = np.mgrid[:h, :w]
  return np.stack([(xx * 9 + phase) % 256, (yy * 13 + phase) % 256, (xx * yy + phase) % 256], -1).astype(np.uint8)


def test_make_source_by_name(tmp_path):
  import ml_collections

  config = ml_collections.ConfigDict(dict(name="shapes_rendered", image_size=SIZE, num_train=24, seed=3))
  src = input_pipeline.make_source(config)
  assert isinstance(src, ShapesSource) and (src.split, src.seed, len(src), src.image_size) == ("train", 3, 24, SIZE)
  val = input_pipeline.make_source(config, "validation")  # validation is the test split, default size
  assert (val.split, len(val)) == ("test", input_pipeline.DATA_DEFAULTS["num_test"])
  assert len(input_pipeline.make_source(config, "heldout")) == input_pipeline.DATA_DEFAULTS["num_heldout"]
  # "shapes": the TFDS build under data_dir, example for example the rendered stream.
  sizes = dict(num_train=16, num_test=8, num_heldout=4)
  built = input_pipeline.make_source(dict(name="shapes", image_size=SIZE, seed=3, data_dir=str(tmp_path), **sizes))
  assert len(built) == 16 and (tmp_path / "captioned_shapes").is_dir()
  for k, v in src[5].items():
    np.testing.assert_array_equal(built[5][k], v, err_msg=k)
  test = input_pipeline.make_source(dict(name="shapes", image_size=SIZE, seed=3, data_dir=str(tmp_path), **sizes),
                                    "validation")
  assert len(test) == 8
  with pytest.raises(ValueError, match="split"):
    input_pipeline.make_source(config, "restval")
  with pytest.raises(ValueError, match="image_size"):
    input_pipeline.make_source(dict(name="shapes_rendered"))
  with pytest.raises(ValueError, match=r"'imagenet'.*shapes_rendered.*cifar10"):
    input_pipeline.make_source(dict(name="imagenet", image_size=64))


def test_resize_and_crop_pixels():
  wide, tall, odd = ramp(12, 20, 1), ramp(20, 12, 2), ramp(12, 19, 3)
  np.testing.assert_array_equal(input_pipeline.resize_and_crop(wide, 12), wide[:, 4:16])
  np.testing.assert_array_equal(input_pipeline.resize_and_crop(tall, 12), tall[4:16])
  np.testing.assert_array_equal(input_pipeline.resize_and_crop(odd, 12), odd[:, 3:15])  # offset rounded down
  # 24 x 40 -> 12 x 20 with pillow's bicubic (antialiased), then the centre 12 columns.
  big = ramp(24, 40, 4)
  small = np.asarray(Image.fromarray(big).resize((20, 12), Image.Resampling.BICUBIC))
  out = input_pipeline.resize_and_crop(big, 12)
  assert out.shape == (12, 12, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, small[:, 4:16])
  # Upsampling a square only resizes; one channel stays one channel.
  gray = ramp(6, 6)[..., :1]
  up = input_pipeline.resize_and_crop(gray, 12)
  np.testing.assert_array_equal(up[..., 0], np.asarray(Image.fromarray(gray[..., 0]).resize((12, 12),
                                                                                            Image.Resampling.BICUBIC)))
  # Random crops: every offset that fits, drawn uniformly.
  rng = np.random.default_rng(0)
  lefts = set()
  for _ in range(200):
    crop = input_pipeline.resize_and_crop(wide, 12, rng)
    lefts.add(next(l for l in range(9) if np.array_equal(crop, wide[:, l:l + 12])))
  assert lefts == set(range(9))


def test_pipeline_crops_mixed_sizes_and_keeps_square_sources_unchanged():
  images = [ramp(12, 20, 0), ramp(20, 12, 1), ramp(12, 12, 2), ramp(24, 24, 3)]
  src = ArraySource(images)
  b = next(create_iterator(src, batch_size=4, seed=0, shuffle=False, image_size=12))
  expected = [images[0][:, 4:16], images[1][4:16], images[2],
              np.asarray(Image.fromarray(images[3]).resize((12, 12), Image.Resampling.BICUBIC))]
  np.testing.assert_array_equal(b["image"], np.stack(expected).astype(np.float32) / 127.5 - 1.0)
  with pytest.raises(ValueError, match=r"different sizes.*image_size"):  # they cannot batch as they are
    next(create_iterator(src, batch_size=4, seed=0))
  # A source already at image_size comes out exactly as without resizing, crop or not.
  shapes_src = ShapesSource("train", seed=0, num_examples=32, image_size=SIZE)
  plain = take(create_iterator(shapes_src, batch_size=8, seed=3), 2)
  assert_batches_equal(take(create_iterator(shapes_src, batch_size=8, seed=3, image_size=SIZE), 2), plain)
  assert_batches_equal(take(create_iterator(shapes_src, batch_size=8, seed=3, image_size=SIZE, random_crop=True), 2),
                       plain)
  with pytest.raises(ValueError, match="random_crop"):
    create_iterator(shapes_src, batch_size=8, seed=0, random_crop=True)
  with pytest.raises(ValueError, match="image_size"):
    create_iterator(shapes_src, batch_size=8, seed=0, image_size=0)


def test_random_crop_is_a_function_of_seed_and_position():
  src = ArraySource([ramp(12, 24, p) for p in range(8)])
  kwargs = dict(batch_size=4, seed=5, image_size=12, random_crop=True)

  def lefts(batches):
    return [next(l for l in range(13) if np.array_equal(img, src[int(i)]["image"][:, l:l + 12].astype(np.float32)
                                                         / 127.5 - 1.0))
            for b in batches for img, i in zip(b["image"], b["index"])]

  batches = take(create_iterator(src, **kwargs), 6)  # three epochs
  assert len(set(lefts(batches))) >= 6
  per_example = {}
  for left, i in zip(lefts(batches), np.concatenate([b["index"] for b in batches])):
    per_example.setdefault(int(i), set()).add(left)
  assert sum(len(v) > 1 for v in per_example.values()) >= 4  # a new crop each epoch
  assert_batches_equal(batches, take(create_iterator(src, **kwargs), 6))
  assert lefts(batches) != lefts(take(create_iterator(src, **dict(kwargs, seed=6)), 6))
  it = create_iterator(src, **kwargs)
  take(it, 3)
  restored = create_iterator(src, **kwargs)
  restored.set_state(json.loads(json.dumps(it.get_state())))
  assert_batches_equal(take(restored, 3), batches[3:])


def test_pair_fraction_source_rebalances_the_train_split_only():
  config = dict(name="shapes_rendered", image_size=SIZE, num_train=40, seed=3, pair_fraction=0.75)
  src = input_pipeline.make_source(config)
  plain = ShapesSource("train", seed=3, num_examples=40, image_size=SIZE)
  assert isinstance(src, shapes_source.PairFractionSource) and len(src) == 40
  counts = np.array([int(src[i]["num_objects"]) for i in range(40)])
  assert (counts == 2).sum() == 30 and (counts == 1).sum() == 10
  # Each kind's examples are spread evenly: every two-object example of the plain source is read
  # floor or ceil(30 / its count) times, and the examples are the plain source's, byte for byte.
  pairs = [i for i in range(40) if int(plain[i]["num_objects"]) == 2]
  reads = np.bincount([int(src[i]["index"]) for i in range(30)], minlength=40)[pairs]
  assert reads.min() == 30 // len(pairs) and reads.max() == -(-30 // len(pairs))
  # Thinned, the one-object examples are still drawn from the whole source, not its first ten.
  singles = [i for i in range(40) if int(plain[i]["num_objects"]) == 1]
  read_singles = {int(src[i]["index"]) for i in range(30, 40)}
  assert len(read_singles) == 10 and max(read_singles) >= singles[len(singles) * 3 // 4]
  for k, v in plain[int(src[7]["index"])].items():
    np.testing.assert_array_equal(src[7][k], v, err_msg=k)
  # A shuffled epoch holds exactly that fraction; evaluation splits keep the dataset's own mix.
  batches = list(create_iterator(src, batch_size=8, seed=0, num_epochs=1))
  assert sum(int((b["num_objects"] == 2).sum()) for b in batches) == 30
  assert isinstance(input_pipeline.make_source(config, "test"), ShapesSource)
  only_pairs = input_pipeline.make_source(dict(config, pair_fraction=1.0))
  assert sorted({int(only_pairs[i]["index"]) for i in range(40)}) == pairs
  for bad in (-0.1, 1.5, True, "0.5"):
    with pytest.raises(ValueError, match="pair_fraction"):
      input_pipeline.make_source(dict(config, pair_fraction=bad))
  with pytest.raises(ValueError, match="pair_fraction.*'cifar10'"):  # refused, not silently ignored
    input_pipeline.make_source(dict(name="cifar10", pair_fraction=0.75))
  with pytest.raises(ValueError, match="holds none"):  # example 0 of seed 3 has one object
    input_pipeline.make_source(dict(config, num_train=1, pair_fraction=1.0))
  with pytest.raises(IndexError):
    src[40]
  with pytest.raises(TypeError, match="PairFractionSource indices are integers"):
    src[3.5]
