"""configs/shapes_edm.py: EDM's columns train through the real loop, sample with Karras's sampler, are scored,
and EDM2's post-hoc EMA reconstructs a workdir that samples like any run."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from tests.conftest import load_config
from t2i_jax import config_keys
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import sample_workdir, stage as stage_lib, text_to_image
from t2i_jax.train import checkpoint, loop, posthoc_ema


@pytest.mark.slow
def test_edm_trains_samples_scores_and_reconstructs_its_ema(tmp_path, train_runlocal, check_samples):
  config, lines = train_runlocal("shapes_edm:runlocal", tmp_path)
  assert all(np.isfinite(m["log_sigma"]) for m in lines)
  # Snapshots of both profiles at every posthoc_every steps (1 at runlocal's 2 steps) and at the end.
  assert sorted(os.listdir(tmp_path / "posthoc_ema")) == ["00000001.msgpack", "00000002.msgpack"]
  paths = sample_workdir.sample_to_files(config, str(tmp_path))
  check_samples(paths, len(config.sample.prompts), config.model.image_size)
  rows, _ = evaluate.run(config, str(tmp_path), ["heun:3:3", "dpm++2m:3:1", "euler:3:3:churn=5"])
  assert [(r["method"], r["steps"], r.get("churn")) for r in rows] == [("heun", 3, None), ("dpm++2m", 3, None),
                                                                       ("euler", 3, 5.0)]
  assert all(0 <= r["caption_accuracy"] <= 1 and np.isfinite(r["fid"]) for r in rows)
  stage = stage_lib.load_stage(str(tmp_path))
  settings = text_to_image.SampleSettings(method="heun", steps=3, guidance=3.0, churn=text_to_image.edm.Churn(5.0))
  a = text_to_image.sample_unet(stage.model, stage.params, stage.diffusion, stage.text_cond(["a red circle"], {}), 1,
                                settings)
  # Same seed without churn: only the churn's fresh noise tells them apart.
  b = text_to_image.sample_unet(stage.model, stage.params, stage.diffusion, stage.text_cond(["a red circle"], {}), 1,
                                dataclasses.replace(settings, churn=text_to_image.edm.Churn()))
  assert np.isfinite(np.asarray(a)).all() and np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  with pytest.raises(ValueError, match="samples on the Karras σ grid; use one of euler, heun, dpm\\+\\+2m"):
    text_to_image.sample_unet(stage.model, stage.params, stage.diffusion, {}, 1,
                              text_to_image.SampleSettings(method="ddim", steps=3))
  # --mode=posthoc_ema's workdir: its params are the least-squares mix of the snapshots, read like any run's.
  out = posthoc_ema.write_workdir(str(tmp_path), 0.08)
  rebuilt, coefficients, step = posthoc_ema.reconstruct(str(tmp_path), 0.08)
  assert step == 2 and len(coefficients) == 4
  _, params, loaded_step = checkpoint.load_params(checkpoint.read_config(out), out)
  assert loaded_step == 2
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), params, rebuilt)
  assert json.load(open(os.path.join(out, "posthoc_ema.json")))["sigma_rel"] == 0.08
  check_samples(sample_workdir.sample_to_files(config, out), len(config.sample.prompts), config.model.image_size)


@pytest.mark.parametrize("column", ["vp", "ve"])
@pytest.mark.slow
def test_the_vp_and_ve_columns_train_through_the_loop(column, tmp_path, train_runlocal):
  config, _ = train_runlocal(f"shapes_edm:{column},runlocal", tmp_path)
  assert config.diffusion.preconditioning == column


def test_edm_refuses_what_it_does_not_train():
  config = config_keys.complete(load_config("shapes_edm:runlocal"))
  config.model.learn_sigma = True
  with pytest.raises(ValueError, match="set model.learn_sigma=False and diffusion.var_type='fixed_small'"):
    loop.train(config, "/nonexistent/never_written")
  config = config_keys.complete(load_config("shapes_edm:runlocal"))
  config.train.posthoc_every = 0
  with pytest.raises(ValueError, match="train.posthoc_every=0: the post-hoc EMA profiles are snapshot"):
    loop.train(config, "/nonexistent/never_written")
  config = config_keys.complete(load_config("shapes_edm:runlocal"))
  config.diffusion.preconditioning = "eps"
  with pytest.raises(ValueError, match="preconditioning='eps' is not supported"):
    loop.train(config, "/nonexistent/never_written")
  with pytest.raises(ValueError, match="churn=S takes S_churn ≥ 0"):
    text_to_image.parse_setting("heun:10:3:churn=-2")
