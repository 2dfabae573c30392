"""GLIDE's cascade: the runlocal base (16 px) → text upsampler (32 px) from a prompt, the upsampler fed the
base's samples and reading the caption, no recompiles, mismatched stages refused, the published pair
accepted, the cascade's eval at both resolutions."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from t2i_jax import config_keys
from t2i_jax.diffusion import samplers
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import chain as chain_lib, glide, stage as stage_lib, text_to_image
from t2i_jax.train import loop

from tests.conftest import load_config, perturb

PROMPT = "a small red circle left of a large blue square"


@pytest.fixture(scope="module")
def glide_runlocal(trained_runlocal, tmp_path_factory):
  """The shapes_glide:runlocal chain config over the session's trained runlocal base and a runlocal text
  upsampler trained two steps through the real loop."""
  base_dir, _ = trained_runlocal
  upsampler_dir = str(tmp_path_factory.mktemp("glide_upsampler"))
  loop.train(load_config("shapes_glide_upsampler:runlocal"), upsampler_dir)
  chain = load_config("shapes_glide:runlocal")
  chain.glide.update(dict(base_workdir=base_dir, upsampler_workdir=upsampler_dir))
  return chain


@pytest.mark.slow
def test_the_cascade_upsamples_the_base_samples_of_a_prompt(glide_runlocal, tmp_path, check_samples):
  config = glide_runlocal
  num = config.glide.num_images
  paths = chain_lib.sample_to_files(glide.CHAIN, config, str(tmp_path), prompts=[PROMPT])
  check_samples(paths, num, 32)  # base 16 px -> upsampler 32 px
  assert set(paths["grids"]) == {"base", "upsampler"}

  cascade = glide.load(config.glide)
  settings = glide.Settings.from_config(config.glide, cascade)
  prompts = [PROMPT, "a large green star in the middle"]
  first = glide.generate(cascade, prompts, settings)
  assert first["base"].shape == (2, 16, 16, 3) and first["upsampler"].shape == (2, 32, 32, 3)
  compiled = samplers._sample_jit._cache_size()  # pylint: disable=protected-access
  # Another base seed, the upsampler's unchanged: its output moves with the base's samples it is fed.
  moved = glide.Settings(dataclasses.replace(settings.base, seed=7, guidance=1.5), settings.upsampler)
  second = glide.generate(cascade, ["a small yellow cross on the right", PROMPT], moved)
  assert samplers._sample_jit._cache_size() == compiled  # pylint: disable=protected-access
  assert not np.allclose(np.asarray(first["upsampler"]), np.asarray(second["upsampler"]))
  low = first["base"]
  same = text_to_image.super_resolve(cascade.upsampler, low, settings.upsampler, prompts)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(first["upsampler"]))
  # Same low-resolution input and noise, another caption: the upsampler reads the text. (Two steps leave
  # the zero-initialised output layers at zero, where no input but the skip path counts: perturb them.)
  upsampler = dataclasses.replace(cascade.upsampler, params=perturb(cascade.upsampler.params, 0.05))
  read = [text_to_image.super_resolve(upsampler, low, settings.upsampler, p) for p in (prompts, prompts[::-1])]
  assert np.abs(np.asarray(read[0] - read[1])).max() > 1e-3
  # Started at t = 1 (of the runlocal 100), the upsampler returns its input resized bilinearly, changed only
  # by one step at that noise level; started from noise, it draws something else.
  bilinear = np.asarray(text_to_image.upsample_bilinear(low, 32))
  started = dataclasses.replace(settings.upsampler, method="ddim", steps=2, start_timestep=1)
  near = np.asarray(text_to_image.super_resolve(upsampler, low, started, prompts))
  far = np.asarray(text_to_image.super_resolve(upsampler, low, dataclasses.replace(started, start_timestep=0), prompts))
  assert np.abs(near - bilinear).mean() < 0.05 < 0.2 < np.abs(far - bilinear).mean()


@pytest.mark.slow
def test_mismatched_stages_are_refused_and_the_published_pair_chains(glide_runlocal, tmp_path):
  config = glide_runlocal
  base, upsampler = config.glide.base_workdir, config.glide.upsampler_workdir
  out = str(tmp_path / "out")
  swapped = config_keys.complete(config)
  swapped.glide.update(dict(base_workdir=upsampler, upsampler_workdir=base))
  with pytest.raises(ValueError, match="not a text-conditional base U-Net"):
    chain_lib.sample_to_files(glide.CHAIN, swapped, out, prompts=[PROMPT])
  no_upsampler = config_keys.complete(config)
  no_upsampler.glide.upsampler_workdir = base
  with pytest.raises(ValueError, match="is not a super-resolution U-Net"):
    chain_lib.sample_to_files(glide.CHAIN, no_upsampler, out, prompts=[PROMPT])
  configs = {"base": (base, stage_lib.read_config(base)), "upsampler": (upsampler, stage_lib.read_config(upsampler))}
  configs["upsampler"][1].low_res.factor = 4
  with pytest.raises(ValueError, match=r"upsampler in .* takes 8px inputs .* the base in .* makes 16px"):
    glide.check_cascade(configs)
  assert not os.path.exists(out)
  # GLIDE's released pair: the 64 px base feeds the 64 → 256 upsampler.
  glide.check_cascade({"base": ("base64", load_config("glide_base64")),
                       "upsampler": ("upsample256", load_config("glide_upsample256"))})
  with pytest.raises(ValueError, match="takes 64px inputs"):
    glide.check_cascade({"base": (base, stage_lib.read_config(base)),
                         "upsampler": ("upsample256", load_config("glide_upsample256"))})


@pytest.mark.slow
def test_cascade_eval_scores_the_base_and_the_upsampled_images(glide_runlocal, tmp_path):
  rows, path = evaluate.run_chain(glide_runlocal, str(tmp_path))
  assert [(r["output"], r["image_size"]) for r in rows] == [("base", 16), ("upsampler", 32)]
  for row in rows:
    for key in ("caption_accuracy", "binding_accuracy", "heldout_caption_accuracy"):
      assert 0.0 <= row[key] <= 1.0
    assert row["fid"] > 0 and row["diversity"] > 0
  metrics = json.load(open(path))
  assert metrics["output"] == "upsampler" and set(metrics["stages"]) == {"base", "upsampler"}
  assert metrics["upsampler"] == glide_runlocal.glide.upsampler
