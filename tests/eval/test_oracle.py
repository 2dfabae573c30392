"""The shipped shapes oracle: canonical targets, accuracy on unseen renders (clean, noisy, heldout pairs), I/O."""

import os

import numpy as np
import pytest

from t2i_jax.data import shapes
from t2i_jax.data.captions import ObjectSpec, Scene
from t2i_jax.eval import oracle
from t2i_jax.eval.train_oracle import EVAL_BLUR, EVAL_NOISE, degrade

# Indices 0.. of the "test" and "heldout" streams; training renders only the "train" split.
N_32, N_OTHER = 200, 100


@pytest.fixture(scope="module")
def loaded():
  return oracle.load_oracle()


def _renders(size, count):
  images, targets = [], []
  for split in ("test", "heldout"):
    im, _, scenes = shapes.render_batch(split, 0, 0, count, size)
    images.append(im)
    targets.append(oracle.targets(scenes))
  return np.concatenate(images), {k: np.concatenate([t[k] for t in targets]) for k in targets[0]}


def test_canonical_orders_pairs_from_the_relation():
  a, b = ObjectSpec("red", "circle", "small"), ObjectSpec("blue", "star", "large")
  left = oracle.canonical(Scene((a, b), "left of"))
  assert left == dict(count=2, color=(0, 2), shape=(0, 3), size=(0, 1), position=-1, orientation=0)
  # "a right of b" is the same picture as "b left of a".
  assert oracle.canonical(Scene((a, b), "right of")) == oracle.canonical(Scene((b, a), "left of"))
  assert oracle.canonical(Scene((a, b), "right of"))["color"] == (2, 0)
  above = oracle.canonical(Scene((a, b), "above"))
  assert above["orientation"] == 1 and above["color"] == (0, 2)
  below = oracle.canonical(Scene((a, b), "below"))
  assert below["orientation"] == 1 and below["shape"] == (3, 0) and below["size"] == (1, 0)


def test_canonical_single_object_and_centres():
  t = oracle.canonical(Scene((ObjectSpec("green", "cross", "large", "bottom left"),)))
  assert t == dict(count=1, color=(1, -1), shape=(4, -1), size=(1, -1), position=6, orientation=-1)
  # Without a position the centre's grid cell is used: x=0.8 (right column), y=0.2 (top row).
  assert oracle.canonical(Scene((ObjectSpec(0, 0, 0, center=(0.8, 0.2)),)))["position"] == 2
  # Laid-out dataset scenes agree with the pixels: slot 0 really is the left / top object.
  _, _, scenes = shapes.render_batch("test", 0, 0, 60, 32)
  for s in scenes:
    if len(s.objects) == 2:
      t = oracle.canonical(s)
      first = s.objects[0] if s.relation in (0, 2) else s.objects[1]
      axis = 0 if t["orientation"] == 0 else 1
      assert first.center[axis] == min(o.center[axis] for o in s.objects)
      assert (first.color, first.shape) == (t["color"][0], t["shape"][0])


def test_targets_stack_like_readings():
  _, _, scenes = shapes.render_batch("test", 0, 0, 8, 16)
  t = oracle.targets(scenes)
  assert t["color"].shape == (8, 2) and t["count"].shape == (8,) and t["count"].dtype == np.int32
  assert np.all((t["position"] >= 0) == (t["count"] == 1)) and np.all((t["orientation"] >= 0) == (t["count"] == 2))


def test_accuracy_on_unseen_clean_renders_32px(loaded):
  images, target = _renders(32, N_32)
  acc = oracle.attribute_accuracy(oracle.read(*loaded, images), target)
  assert acc["all"] >= 0.99, acc
  assert min(acc[k] for k in ("count", "color", "shape", "size", "position", "orientation")) >= 0.97, acc


@pytest.mark.parametrize("size,bar", [(16, 0.985), (48, 0.99)])
def test_accuracy_at_other_canvas_sizes(loaded, size, bar):
  images, target = _renders(size, N_OTHER)
  acc = oracle.attribute_accuracy(oracle.read(*loaded, images), target)
  assert acc["all"] >= bar, acc


def test_accuracy_with_noise_and_blur_32px(loaded):
  images, target = _renders(32, N_32)
  noisy = degrade(images, EVAL_NOISE, EVAL_BLUR, np.random.default_rng(0))
  acc = oracle.attribute_accuracy(oracle.read(*loaded, noisy), target)
  assert acc["all"] >= 0.95, acc


def test_reads_every_heldout_pair_it_never_saw(loaded):
  # Red triangles and blue circles at every position and size: no training image held one.
  objects = [ObjectSpec(c, s, size, pos) for c, s in shapes.HELDOUT_PAIRS for size in (0, 1) for pos in range(9)]
  images = np.stack([shapes.render([o], None, 32) for o in objects])
  r = oracle.read(*loaded, images)
  t = oracle.targets([Scene((o,)) for o in objects])
  for k in ("count", "color", "shape", "size", "position"):
    assert np.mean(r[k] == t[k]) >= 0.97, (k, r[k], t[k])


def test_float_and_uint8_inputs_agree_and_batches_pad(loaded):
  images, _ = _renders(32, 10)
  a = oracle.read(*loaded, images)
  b = oracle.read(*loaded, shapes.to_float(images), batch_size=256)
  c = oracle.read(*loaded, images[:7], batch_size=4)  # two chunks, the second padded
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a[k][:7], c[k])
  f = oracle.features(*loaded, images)
  assert f.shape == (20, loaded[0].hidden + loaded[0].color_hidden) and f.dtype == np.float32


def test_bad_inputs_raise_clear_errors(loaded, tmp_path):
  with pytest.raises(ValueError, match="images\\[None\\]"):
    oracle.read(*loaded, np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="16..64"):
    oracle.read(*loaded, np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="\\[-1, 1\\]"):
    oracle.read(*loaded, np.full((1, 32, 32, 3), 200.0, np.float32))
  with pytest.raises(FileNotFoundError, match="train_oracle"):
    oracle.load_oracle(str(tmp_path / "missing.msgpack"))


def test_shipped_asset_is_small():
  assert os.path.getsize(oracle.ASSET_PATH) < 2 * 1024 * 1024
