"""The evaluation harness: prompts cover every attribute, perfect images score 100%, wrong ones do not."""

import numpy as np
import pytest

from t2i_jax import config_keys
from t2i_jax.data import captions
from t2i_jax.eval import evaluate, oracle as oracle_lib


@pytest.fixture(scope="module")
def oracle():
  return oracle_lib.load_oracle()


def test_prompts_cover_every_attribute_and_are_named_in_full():
  scenes = evaluate.prompt_scenes(num_single=60, num_heldout=10, num_pair=10, seed=0)
  single = [s for s in scenes[:60]]
  for field, names in (("color", captions.COLORS), ("shape", captions.SHAPES), ("size", captions.SIZES),
                       ("position", captions.POSITIONS)):
    assert {getattr(s.objects[0], field) for s in single} == set(range(len(names)))
  prompts = evaluate.prompts_for(scenes)
  for scene, prompt in zip(single, prompts):
    obj = scene.objects[0]
    for word in (obj.color_name, obj.shape_name, obj.size_name):
      assert word in prompt
  heldout = scenes[60:70]
  assert all((o.color_name, o.shape_name) in {("red", "triangle"), ("blue", "circle")}
             for s in heldout for o in s.objects)
  assert all(len(s.objects) == 2 for s in scenes[70:])
  assert evaluate.prompt_scenes(60, 10, 10, seed=0) == scenes  # fixed by the seed


def test_renders_of_the_prompts_score_near_perfect_and_mismatched_images_do_not(oracle):
  scenes = evaluate.prompt_scenes(num_single=80, num_heldout=20, num_pair=40, seed=1)
  renders = evaluate.reference_images(scenes, 32, seed=1)
  # Features of another jittered rendering of the same prompts.
  references = oracle_lib.features(*oracle, evaluate.reference_images(scenes, 32, seed=2))
  good = evaluate.score(renders, scenes, oracle, references)
  assert good["caption_accuracy"] >= 0.95 and good["color_accuracy"] >= 0.98
  assert good["binding_accuracy"] >= 0.9 and good["heldout_caption_accuracy"] >= 0.9
  # The same images against prompts rotated by one: attributes no longer match.
  rotated = scenes[1:80] + scenes[:1] + scenes[80:]
  bad = evaluate.score(renders, rotated, oracle, references)
  assert bad["caption_accuracy"] < 0.1 and bad["color_accuracy"] < 0.4
  # FID: renders vs renders is far below renders vs blank canvases.
  blank = np.full_like(renders, 56)
  assert evaluate.score(blank, scenes, oracle, references)["fid"] > 5 * good["fid"]


def test_settings_parse_and_bad_ones_are_explained():
  assert evaluate.parse_setting("dpm++2m:20:3") == dict(method="dpm++2m", steps=20, guidance=3.0)
  assert evaluate.parse_setting("ddpm:50:1:fixed_large") == dict(method="ddpm", steps=50, guidance=1.0,
                                                                 var_type="fixed_large")
  assert evaluate.parse_setting("dpm++2m:10:1:start=500") == dict(method="dpm++2m", steps=10, guidance=1.0,
                                                                  start_timestep=500)
  assert evaluate.parse_setting("ddpm:10:1:fixed_small:start=5")["start_timestep"] == 5
  with pytest.raises(ValueError, match="'wide' is neither a VAR_TYPE"):
    evaluate.parse_setting("ddpm:50:1:wide")
  with pytest.raises(ValueError, match="start=T takes an integer"):
    evaluate.parse_setting("ddpm:50:1:start=late")
  with pytest.raises(ValueError, match="METHOD:STEPS:GUIDANCE"):
    evaluate.parse_setting("ddim:20")
  with pytest.raises(ValueError, match="STEPS must be an integer"):
    evaluate.parse_setting("ddim:x:3")


def test_table_lists_accuracies_in_percent():
  table = evaluate.format_table([dict(method="ddim", steps=50, guidance=3.0, caption_accuracy=0.755, fid=12.3)])
  assert "| ddim | 50 | 3 |" in table and "| 75.5 |" in table and "| 12.3 |" in table


def test_diversity_over_kept_samples_leaves_out_the_others_and_lone_prompts():
  # Two prompts, three samples each, 1-d features.
  features = np.array([[0.0], [1.0], [3.0], [5.0], [5.0], [9.0]])
  # All pairs: prompt 0 distances 1, 3, 2 -> mean 2; prompt 1: 0, 4, 4 -> 8/3.
  assert evaluate.diversity(features, 3) == pytest.approx((2 + 8 / 3) / 2)
  # Keep samples 0 and 2 of prompt 0 (distance 3); prompt 1 keeps one sample, so it has no pair.
  keep = np.array([True, False, True, False, True, False])
  assert evaluate.diversity(features, 3, keep) == pytest.approx(3.0)
  assert np.isnan(evaluate.diversity(features, 3, np.zeros(6, bool)))


def test_no_diverse_prompts_leaves_the_diversity_figures_out(oracle):
  evaluation = config_keys.section("eval", num_single=8, num_heldout=0, num_pair=0, num_diverse=0, batch_size=8)
  scenes = evaluate.prompt_scenes(8, 0, 0, evaluation.seed)
  renders = evaluate.reference_images(scenes, 24, seed=5).astype(np.float32) / 127.5 - 1.0

  def sample_fn(setting, prompts, seed):
    assert len(prompts) == 8  # the eval prompts only: no diversity batch is sampled
    return {"": renders}

  (row,) = evaluate.evaluate_fn(sample_fn, [dict(method="heun", steps=3, guidance=3.0)], evaluation, oracle)
  assert row["caption_accuracy"] >= 0.85 and "diversity" not in row and row["num_prompts"] == 8
