"""The class-conditional and classifier families train two runlocal steps; guidance samples (CLIP and the prior:
tests/pipelines/test_unclip.py)."""

import jax
import numpy as np
import pytest

from t2i_jax.pipelines import sample_workdir


@pytest.mark.slow
def test_adm_and_its_classifier_train_and_sample_with_classifier_guidance(tmp_path, train_runlocal, check_samples):
  unet_config, _ = train_runlocal("adm_imagenet64:runlocal", tmp_path / "unet")
  _, metrics = train_runlocal("adm_imagenet64:classifier,runlocal", tmp_path / "classifier")
  assert 0.0 <= metrics[-1]["accuracy"] <= 1.0
  unet_config.sample.classifier_workdir = str(tmp_path / "classifier")
  unet_config.sample.classifier_scale = 10.0
  guided = sample_workdir.sample_to_files(unet_config, str(tmp_path / "unet"))
  check_samples(guided, unet_config.sample.num_images, 16)
  # The loaded classifier's guidance gradient is a real, non-zero push on x_t.
  grad_fn = jax.jit(sample_workdir.classifier_guidance(unet_config))  # as the sampler runs it: op by op is 190 compiles
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  grad = np.asarray(grad_fn(x, np.array([50, 90]), {"y": np.array([0, 3])}))
  assert grad.shape == x.shape and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
