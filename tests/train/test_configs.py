"""Every published config's `:runlocal` variant trains two steps through the real loop and samples."""

import importlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from t2i_jax.pipelines import sample_workdir
from t2i_jax.train import loop


def load(spec: str):
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(arg or None)


def _train(spec, workdir, **overrides):
  config = load(spec)
  config.update(overrides)
  state = loop.train(config, str(workdir))
  assert int(state.step) == 2
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [m["step"] for m in lines] == [1, 2]
  assert all(np.isfinite(m["loss"]) for m in lines)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
  return config, lines


def _check_samples(paths, num, size):
  assert len(paths["images"]) == num
  pixels = np.stack([np.asarray(Image.open(p)) for p in paths["images"]])
  assert pixels.shape == (num, size, size, 3)
  assert pixels.std() > 1.0  # noise-like images after two steps, not a constant fill
  assert os.path.getsize(paths["grid"]) > 100


# shapes_default:full,runlocal: the :full variant's own pieces (no AdaGN or pooled caption, the attention's
# position table, the timestep tail and its early weight, which fails unless the loop's step reaches the loss)
# through the loop at runlocal's size; the plain default is test_loop's.
@pytest.mark.parametrize("spec", ["iddpm_cifar10:runlocal", "glide_base64:runlocal", "glide_upsample256:runlocal",
                                  "shapes_default:full,runlocal"])
def test_runlocal_unet_trains_and_samples(spec, tmp_path):
  config, _ = _train(spec, tmp_path)
  paths = sample_workdir.sample_to_files(config, str(tmp_path))
  _check_samples(paths, config.sample.num_images if config.model.get("text") is None or config.model.get(
      "super_res") else len(config.sample.prompts), config.model.image_size)
