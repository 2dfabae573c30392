"""GLIDE's CLIP guidance: the runlocal noised CLIP trained two steps through the loop guides the runlocal text
U-Net; scale 0 equals unguided sampling, new prompts and scales do not recompile, bad pairings are refused."""

import dataclasses
import shutil

import numpy as np
import pytest

from t2i_jax import config_keys
from t2i_jax.diffusion import samplers
from t2i_jax.pipelines import sample_workdir, stage as stage_lib, text_to_image
from t2i_jax.train import loop

from tests.conftest import load_config

PROMPTS = ["a large red circle in the center", "a small blue square at the top left"]


@pytest.fixture(scope="module")
def noised_clip(tmp_path_factory):
  """The runlocal noised CLIP trained two steps through the real loop (x_t at uniform timesteps)."""
  workdir = str(tmp_path_factory.mktemp("noised_clip"))
  state = loop.train(load_config("shapes_noised_clip:runlocal"), workdir)
  assert int(state.step) == 2
  return workdir


@pytest.mark.slow
def test_clip_guided_sampling(trained_runlocal, noised_clip, tmp_path, check_samples):
  base_dir, _ = trained_runlocal
  base = stage_lib.load_stage(base_dir)
  clip_stage = stage_lib.load_stage(noised_clip)
  settings = text_to_image.SampleSettings(method="ddim", steps=4, guidance=1.0, min_timestep=15, seed=3)
  plain = np.asarray(text_to_image.generate(base, PROMPTS, settings))
  # Scale 0: the unguided images up to float32 rounding (a guided step re-derives x0 from the shifted ε),
  # far under one 8-bit level (2/255).
  zero = text_to_image.clip_guidance(clip_stage, base, PROMPTS, 0.0)
  np.testing.assert_allclose(np.asarray(text_to_image.generate(base, PROMPTS, settings, zero)), plain, atol=1e-3)
  guided = np.asarray(text_to_image.generate(base, PROMPTS, settings,
                                             text_to_image.clip_guidance(clip_stage, base, PROMPTS, 50.0)))
  assert np.abs(guided - plain).max() > 2e-2
  # New prompts, scales and classifier-free guidance beside it: arguments of the compiled loop.
  both = dataclasses.replace(settings, guidance=3.0)
  text_to_image.generate(base, PROMPTS[::-1], both, text_to_image.clip_guidance(clip_stage, base, PROMPTS[::-1], 7.0))
  compiled = samplers._sample_jit._cache_size()  # pylint: disable=protected-access
  text_to_image.generate(base, PROMPTS, dataclasses.replace(both, guidance=2.0, seed=4),
                         text_to_image.clip_guidance(clip_stage, base, PROMPTS, 2.0))
  assert samplers._sample_jit._cache_size() == compiled  # pylint: disable=protected-access

  # --mode=sample: config.sample.clip_workdir and clip_scale.
  config = config_keys.complete(base.config)
  config.sample.update(dict(clip_workdir=noised_clip, clip_scale=3.0))
  out = str(tmp_path / "run")
  shutil.copytree(base_dir, out)
  paths = sample_workdir.sample_to_files(config, out, prompts=PROMPTS)
  check_samples(paths, len(PROMPTS), 16)


@pytest.mark.slow
def test_a_clip_that_does_not_fit_the_u_net_is_refused(trained_runlocal, noised_clip):
  base = stage_lib.load_stage(trained_runlocal[0])
  clip_stage = stage_lib.load_stage(noised_clip)
  other_size = dataclasses.replace(clip_stage, model=clip_stage.model.clone(image_size=32))
  with pytest.raises(ValueError, match="reads 32px images but the U-Net makes 16px"):
    text_to_image.clip_guidance(other_size, base, PROMPTS, 1.0)
  clean = dataclasses.replace(clip_stage, model=clip_stage.model.clone(timestep_conditioned=False))
  with pytest.raises(ValueError, match="reads clean images only"):
    text_to_image.clip_guidance(clean, base, PROMPTS, 1.0)
  config = config_keys.complete(clip_stage.config)
  config.diffusion.num_timesteps = 1000
  with pytest.raises(ValueError, match="schedule of 1000 steps but the U-Net samples the cosine schedule of 100"):
    text_to_image.clip_guidance(dataclasses.replace(clip_stage, config=config), base, PROMPTS, 1.0)
  config = config_keys.complete(base.config)
  config.sample.clip_workdir = trained_runlocal[0]
  with pytest.raises(ValueError, match="holds a 'unet' model; point it at a noised CLIP"):
    sample_workdir.clip_guidance(dataclasses.replace(base, config=config), PROMPTS)
