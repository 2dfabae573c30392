"""The training loop: resume is bitwise, SIGTERM saves, bad workdirs are refused, sampling writes PNGs."""

import json
import os
import re
import shutil
import signal
import threading

import jax
import numpy as np
import pytest

from configs import shapes_default
from t2i_jax.pipelines import images as images_lib, sample_workdir
from t2i_jax.train import loop


def _config(**train):
  config = shapes_default.get_config("runlocal")
  config.train.update(dict(dict(sample_every=0), **train))
  return config


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.fixture
def trained(trained_copy):
  return trained_copy


@pytest.mark.slow
def test_resumed_run_is_bitwise_the_uninterrupted_one(trained, tmp_path):
  workdir, straight = trained
  # A run killed after its step-2 checkpoint: the workdir as it was then.
  resumed_dir = tmp_path / "resumed"
  (resumed_dir / "checkpoints").mkdir(parents=True)
  shutil.copytree(os.path.join(workdir, "checkpoints", "2"), resumed_dir / "checkpoints" / "2")
  shutil.copy(os.path.join(workdir, "config.json"), resumed_dir / "config.json")
  resumed = loop.train(_config(num_steps=3, checkpoint_every=2), str(resumed_dir))
  assert int(resumed.step) == 3
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(line)["step"] for line in open(resumed_dir / "metrics.jsonl")]
  assert steps == [3]


@pytest.mark.slow
def test_sigterm_saves_and_stops(tmp_path):
  workdir = str(tmp_path / "run")
  config = _config(num_steps=1000, checkpoint_every=1000, log_every=1)
  # SIGTERM once the first step has been logged: the loop must save that step and return.
  def send_when_logged():
    path = os.path.join(workdir, "metrics.jsonl")
    while not os.path.exists(path):
      threading.Event().wait(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_when_logged, daemon=True).start()
  state = loop.train(config, workdir)
  step = int(state.step)
  assert 1 <= step < 1000
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


@pytest.mark.slow
def test_other_model_config_in_the_workdir_is_refused(trained):
  workdir, _ = trained
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config = _config(num_steps=5)
  config.model.model_channels = 64
  with pytest.raises(ValueError, match="another model config"):
    loop.train(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


@pytest.mark.slow
def test_sampling_a_workdir_writes_the_grid_and_images(trained, tmp_path):
  workdir, _ = trained
  config = _config()
  # The loop's periodic samples (step 2) and its TensorBoard events.
  assert os.path.getsize(os.path.join(workdir, "samples", "grid_2.png")) > 100
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
  # Sampling the latest checkpoint (step 3) with the config's prompts and sampler.
  paths = sample_workdir.sample_to_files(config, workdir)
  assert paths["grid"].endswith("grid_3.png") and len(paths["images"]) == len(config.sample.prompts)
  with open(paths["images"][0], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="no checkpoint"):
    sample_workdir.sample_to_files(config, str(tmp_path / "empty"))


@pytest.mark.slow
def test_bad_batch_size_and_vocab_are_refused(tmp_path):
  with pytest.raises(ValueError, match="not divisible"):
    loop.train(_config(batch_size=6), str(tmp_path / "a"))
  config = _config()
  config.model.text.vocab_size = 10
  with pytest.raises(ValueError, match="vocab_size"):
    loop.train(config, str(tmp_path / "b"))


@pytest.mark.slow
def test_unknown_config_key_and_missing_dataset_are_refused_before_the_workdir_is_touched(tmp_path):
  config = _config()
  config.train.num_stepz = 3
  with pytest.raises(ValueError, match=r"train.num_stepz \(did you mean 'num_steps'\?\)"):
    loop.train(config, str(tmp_path / "a"))
  config = _config()
  config.data.update(dict(name="cifar10", data_dir=str(tmp_path / "no_data")))
  with pytest.raises(FileNotFoundError, match="python -m t2i_jax.data.prepare --dataset cifar10"):
    loop.train(config, str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
  assert not os.path.exists(tmp_path / "no_data")


@pytest.mark.slow
def test_the_shapes_tfds_dataset_is_built_by_the_training_command(tmp_path):
  config = _config(num_steps=1)
  config.data.update(dict(name="shapes", data_dir=str(tmp_path / "tfds")))
  state = loop.train(config, str(tmp_path / "run"))
  assert int(state.step) == 1
  built = os.listdir(tmp_path / "tfds")
  assert built and os.path.isdir(tmp_path / "tfds" / built[0])


@pytest.mark.slow
def test_eval_mode_writes_metrics_json(trained):
  workdir, _ = trained
  from t2i_jax.eval import evaluate

  rows, path = evaluate.run(_config(), workdir)
  assert path == os.path.join(workdir, "metrics.json")
  with open(path) as f:
    metrics = json.load(f)
  for key in ("color_accuracy", "shape_accuracy", "caption_accuracy", "binding_accuracy",
              "heldout_caption_accuracy", "fid", "method", "steps", "guidance", "seconds_per_image"):
    assert key in metrics
  assert metrics["step"] == 3 and metrics["num_prompts"] == 8 and len(rows) == 1
  assert metrics["min_timestep"] == 15  # the runlocal config's, recorded with the sampler settings
  assert 0.0 <= metrics["color_accuracy"] <= 1.0 and metrics["fid"] > 0
  # An earlier checkpoint is scored into its own file; the latest's metrics.json stays.
  _, path = evaluate.run(_config(), workdir, step=2)
  assert path == os.path.join(workdir, "metrics_step2.json")
  with open(path) as f:
    assert json.load(f)["step"] == 2
  assert os.path.exists(os.path.join(workdir, "eval_table_step2.md"))
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == metrics


@pytest.mark.slow
def test_eval_samples_stop_at_the_configs_min_timestep(trained):
  workdir, _ = trained
  from t2i_jax.eval import evaluate
  from t2i_jax.pipelines import stage as stage_lib, text_to_image

  stage = stage_lib.load_stage(workdir)
  assert stage.step == 3 and stage.config.sample.min_timestep == 15
  prompts = list(stage.config.sample.prompts)

  def sample(min_timestep):
    settings = text_to_image.SampleSettings.from_config(stage.config.sample, method="ddim", steps=3,
                                                        guidance=3.0, min_timestep=min_timestep)
    return evaluate.sample_images(stage, prompts, settings, batch_size=2)[0]

  direct = text_to_image.generate(stage, prompts, text_to_image.SampleSettings(method="ddim", steps=3, guidance=3.0,
                                                                              min_timestep=15))
  np.testing.assert_array_equal(sample(15), images_lib.to_uint8(np.asarray(direct)))
  assert not np.array_equal(sample(15), sample(0))


@pytest.mark.slow
def test_bits_per_dim_of_the_trained_model_is_its_variational_bound(trained):
  workdir, _ = trained
  from t2i_jax.eval import bits_per_dim
  from t2i_jax.pipelines import stage as stage_lib

  config = _config()
  out = bits_per_dim.dataset_bits_per_dim(stage_lib.load_stage(workdir, config), num_examples=8, batch_size=8)
  assert out["num_examples"] == 8 and out["vb_per_t"].shape == (config.diffusion.num_timesteps,)
  # The bound is the prior term plus every timestep's term; a barely trained model sits well above 0.
  assert out["bpd"] == pytest.approx(out["prior_bpd"] + out["vb_per_t"].sum(), rel=1e-4)
  assert 1.0 < out["bpd"] < 100.0


def _restored_leaves(workdir, step):
  from t2i_jax.pipelines import stage as stage_lib

  return jax.tree.leaves(stage_lib.load_stage(workdir, step=step, use_ema=False).params)  # its config.json


@pytest.mark.slow
def test_a_nonfinite_loss_stops_the_run_and_keeps_the_good_checkpoints(tmp_path):
  # The divergence: a huge learning rate without clipping. Warm-up gives step 1 a zero rate, step 2
  # blows the params up (still finite), and step 3's loss is NaN. Every step would be saved and only two kept.
  workdir = str(tmp_path / "run")
  config = _config(num_steps=8, checkpoint_every=1, max_to_keep=2)
  config.optim.update(dict(lr=1e30, grad_clip=0.0))
  # Its own optimizer makes its own program: without attention the U-Net compiles in a fraction of the time.
  config.model.attention_resolutions = ()
  with pytest.raises(FloatingPointError, match=r"step 3: the loss \(nan\).*last good checkpoint is step 2 in "
                                               + re.escape(os.path.join(workdir, "checkpoints"))):
    loop.train(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
  for step in (1, 2):
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in _restored_leaves(workdir, step))
  assert [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))] == [1, 2]


def _damage(step_dir):
  """Truncates every file of a saved step to half its size, as a disk that filled up would leave it."""
  for folder, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        data = f.read()
      with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_skipped_on_sampling_and_resume(trained, tmp_path, capsys):
  source, straight = trained
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  _damage(os.path.join(workdir, "checkpoints", "3"))
  # Sampling reads step 2 and says why step 3 was skipped.
  paths = sample_workdir.sample_to_files(_config(), workdir)
  assert paths["grid"].endswith("grid_2.png")
  assert re.search(r"checkpoint step 3 in .* cannot be restored \(\w+", capsys.readouterr().out)
  # Resuming trains step 3 again from step 2: the same state as the uninterrupted run; the damaged files are kept.
  resumed = loop.train(_config(num_steps=3, checkpoint_every=2), workdir)
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]
  assert len(os.listdir(os.path.join(workdir, "damaged_checkpoints"))) == 1
  # With every checkpoint damaged, one error names each step and nothing is changed.
  for step in ("2", "3"):
    _damage(os.path.join(workdir, "checkpoints", step))
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(ValueError, match=r"no checkpoint in .* can be restored: step 3 \(.*\); step 2 \("):
    sample_workdir.sample_to_files(_config(), workdir)
  with pytest.raises(ValueError, match="can be restored"):
    loop.train(_config(num_steps=4), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
