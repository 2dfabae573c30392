"""The first stage's training: KL and VQ `:runlocal` through the loop and --mode=eval, the loss's terms against
their definitions, the reconstruction falling over a few dozen steps, and the settings it cannot train refused."""

import json

import jax
import numpy as np
import pytest

from configs import common
from t2i_jax import models
from t2i_jax.data import shapes
from t2i_jax.eval import evaluate, reconstruction
from t2i_jax.pipelines import stage as stage_lib
from t2i_jax.train import autoencoder_loss, state as state_lib, step as step_lib

TINY = dict(name="autoencoder_kl", ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4, resolution=8)


def _renders(num, size=8):
  images, _, _ = shapes.render_batch("train", 0, 0, num, image_size=16)
  return shapes.to_float(images.reshape(num, size, 2, size, 2, 3).mean(axis=(2, 4)).astype(np.uint8))


@pytest.mark.parametrize("arg, terms", [("runlocal", {"kl"}), ("runlocal,vq", {"commitment", "codebook"})])
def test_runlocal_first_stages_train_through_the_loop_and_are_scored(arg, terms, train_runlocal, tmp_path):
  config, lines = train_runlocal(f"shapes_autoencoder:{arg}", tmp_path)
  assert terms <= set(lines[-1]) and 0 < lines[-1]["psnr"] < 60
  # --mode=eval: reconstructions of test renders, read by the oracle.
  rows, path = evaluate.run(config, str(tmp_path))
  row = rows[0]
  assert row["num_images"] == 340 and row["image_size"] == 16 and row["step"] == 2
  assert row["original_scene_accuracy"] >= 0.9  # the oracle reads 16 px renders
  # Two steps of training reconstruct almost nothing the oracle can read.
  assert row["reconstructed_scene_accuracy"] < 0.5 and row["kept_accuracy"] < 0.5 and 0 < row["psnr"] < 20
  assert json.load(open(path))["psnr"] == row["psnr"] and (tmp_path / "eval_table.md").exists()
  assert evaluate.columns_for(config) == reconstruction.COLUMNS
  # The same images reconstructed twice are the same: the posterior's mean (or the codes), not a sample.
  stage = stage_lib.load_stage(str(tmp_path))
  assert reconstruction.evaluate(stage, 8)["psnr"] == reconstruction.evaluate(stage, 8)["psnr"]
  with pytest.raises(ValueError, match="takes no --eval_setting"):
    evaluate.run(config, str(tmp_path), ["ddim:3:3"])


def _loss(model_config, section, params, batch, seed=0):
  model = models.build(model_config)
  return autoencoder_loss.make_loss_fn(model, section)(params, batch, jax.random.PRNGKey(seed))


def test_the_loss_terms_are_their_definitions():
  model = models.build(TINY)
  batch = {"image": _renders(4)}
  params = model.init(jax.random.PRNGKey(0), batch["image"])["params"]
  l1 = common.section("autoencoder", reconstruction="l1", kl_weight=0.0)
  loss, aux = _loss(TINY, l1, params, batch)
  metrics = aux["metrics"]
  # The reconstruction the loss decodes: a posterior sample from the loss's own split of the rng.
  recon, extra = model.apply({"params": params}, batch["image"], jax.random.split(jax.random.PRNGKey(0))[0])
  error = np.asarray(recon) - batch["image"]
  np.testing.assert_allclose(float(loss), np.abs(error).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kl"]), float(np.mean(extra["kl"])), rtol=1e-5)
  mse = (error ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(float(metrics["psnr"]), np.mean(10 * np.log10(4 / mse)), rtol=1e-4)
  # The KL enters per pixel of the image, weighted: LDM's sum-over-pixels loss divided by H·W·C.
  weighted, _ = _loss(TINY, common.section("autoencoder", reconstruction="l1", kl_weight=0.5), params, batch)
  np.testing.assert_allclose(float(weighted - loss), 0.5 * float(np.mean(extra["kl"])) / (8 * 8 * 3), rtol=1e-4)
  l2, _ = _loss(TINY, common.section("autoencoder", reconstruction="l2", kl_weight=0.0), params, batch)
  np.testing.assert_allclose(float(l2), (error ** 2).mean(), rtol=1e-5)
  vq = dict(TINY, name="autoencoder_vq", n_embed=16)
  vq_model = models.build(vq)
  vq_params = vq_model.init(jax.random.PRNGKey(1), batch["image"])["params"]
  vq_loss, vq_aux = _loss(vq, l1, vq_params, batch)
  recon, extra = vq_model.apply({"params": vq_params}, batch["image"])
  np.testing.assert_allclose(float(vq_loss), np.abs(np.asarray(recon) - batch["image"]).mean()
                             + float(extra["commitment_loss"]) + float(extra["codebook_loss"]), rtol=1e-5)


def test_the_reconstruction_falls_over_a_few_dozen_steps():
  model = models.build(TINY)
  batch = {"image": _renders(8)}
  loss_fn = autoencoder_loss.make_loss_fn(model, common.section("autoencoder"))
  optimizer = state_lib.make_optimizer(common.optim(3e-3, warmup_steps=1))
  params = model.init(jax.random.PRNGKey(0), batch["image"])["params"]
  state = state_lib.create_train_state(params, optimizer)
  step = jax.jit(step_lib.make_train_step(loss_fn, optimizer, ema_rate=0.9))
  history = []
  for i in range(40):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    history.append(float(metrics["reconstruction"]))
  assert np.mean(history[-5:]) < 0.5 * np.mean(history[:3]), history


def test_what_the_trainer_cannot_train_is_refused():
  with pytest.raises(ValueError, match="reconstruction='l3'"):
    autoencoder_loss.make_loss_fn(models.build(TINY), common.section("autoencoder", reconstruction="l3"))
  ema = models.build(dict(TINY, name="autoencoder_vq", n_embed=16, ema=True))
  with pytest.raises(ValueError, match="model.ema=True keeps the codebook in a non-param collection"):
    autoencoder_loss.make_loss_fn(ema, common.section("autoencoder"))
