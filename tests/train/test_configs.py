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


@pytest.mark.parametrize("spec", ["iddpm_cifar10:runlocal", "glide_base64:runlocal", "glide_upsample256:runlocal"])
def test_runlocal_unet_trains_and_samples(spec, tmp_path):
  config, _ = _train(spec, tmp_path)
  paths = sample_workdir.sample_to_files(config, str(tmp_path))
  _check_samples(paths, config.sample.num_images if config.model.get("text") is None or config.model.get(
      "super_res") else len(config.sample.prompts), config.model.image_size)


def test_adm_and_its_classifier_train_and_sample_with_classifier_guidance(tmp_path):
  unet_config, _ = _train("adm_imagenet64:runlocal", tmp_path / "unet")
  _, metrics = _train("adm_imagenet64:classifier,runlocal", tmp_path / "classifier")
  assert 0.0 <= metrics[-1]["accuracy"] <= 1.0
  unet_config.sample.classifier_workdir = str(tmp_path / "classifier")
  unet_config.sample.classifier_scale = 10.0
  guided = sample_workdir.sample_to_files(unet_config, str(tmp_path / "unet"))
  _check_samples(guided, unet_config.sample.num_images, 16)
  guided_pixels = np.stack([np.asarray(Image.open(p)) for p in guided["images"]])
  unet_config.sample.classifier_workdir = ""
  plain = sample_workdir.sample_to_files(unet_config, str(tmp_path / "unet"))
  plain_pixels = np.stack([np.asarray(Image.open(p)) for p in plain["images"]])
  assert np.abs(guided_pixels.astype(int) - plain_pixels).mean() > 0.5  # the gradient moved the samples


def test_clip_then_prior_on_its_frozen_embeddings(tmp_path):
  _, clip_metrics = _train("shapes_clip:runlocal", tmp_path / "clip")
  assert 0.0 <= clip_metrics[-1]["image_to_text_accuracy"] <= 1.0
  _, prior_metrics = _train("shapes_prior:runlocal", tmp_path / "prior",
                            prior=dict(clip_workdir=str(tmp_path / "clip")))
  assert -1.0 <= prior_metrics[-1]["cosine_to_target"] <= 1.0
  with pytest.raises(ValueError, match="draws images from a U-Net"):
    sample_workdir.sample_to_files(load("shapes_prior:runlocal"), str(tmp_path / "prior"))
