"""--mode=eval on an autoencoder: reconstructions of test renders read by the oracle, through the real loop."""

import json
import os

import pytest

from t2i_jax.eval import evaluate, reconstruction
from t2i_jax.pipelines import stage as stage_lib


def test_an_autoencoder_is_scored_on_its_reconstructions(train_runlocal, tmp_path):
  config, _ = train_runlocal("shapes_autoencoder:runlocal", tmp_path)
  rows, path = evaluate.run(config, str(tmp_path))
  row = rows[0]
  assert row["num_images"] == 340 and row["image_size"] == 16 and row["step"] == 2
  assert row["original_scene_accuracy"] >= 0.9  # the oracle reads 16 px renders
  # Two steps of training reconstruct almost nothing the oracle can read.
  assert row["reconstructed_scene_accuracy"] < 0.5 and row["kept_accuracy"] < 0.5 and 0 < row["psnr"] < 20
  assert json.load(open(path))["psnr"] == row["psnr"] and os.path.exists(tmp_path / "eval_table.md")
  assert evaluate.columns_for(config) == reconstruction.COLUMNS
  # The same images reconstructed twice are the same: the posterior's mean, not a sample.
  stage = stage_lib.load_stage(str(tmp_path))
  again = reconstruction.evaluate(stage, 8)
  assert again["psnr"] == reconstruction.evaluate(stage, 8)["psnr"]
  with pytest.raises(ValueError, match="takes no --eval_setting"):
    evaluate.run(config, str(tmp_path), ["ddim:3:3"])
