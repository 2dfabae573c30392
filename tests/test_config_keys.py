"""Config sections and their defaults: one table builds, checks and completes every config."""

import json

import pytest

from configs import shapes_default
from t2i_jax import config_keys
from t2i_jax.diffusion import timestep_sampling
from t2i_jax.train import checkpoint


def test_an_older_config_json_gets_todays_defaults(tmp_path):
  # A config.json written before some keys existed: they read as their defaults, the rest as written.
  old = shapes_default.get_config().to_dict()
  for section, key in (("sample", "split"), ("train", "sample_every"), ("diffusion", "logit_tail_std"),
                       ("data", "num_heldout"), ("optim", "cooldown_steps")):
    del old[section][key]
  (tmp_path / "config.json").write_text(json.dumps(old))
  config = checkpoint.read_config(str(tmp_path))
  assert (config.sample.split, config.train.sample_every, config.diffusion.logit_tail_std,
          config.data.num_heldout, config.optim.cooldown_steps) == ("test", 0, timestep_sampling.DEFAULT_TAIL_STD,
                                                                    500, 0)
  assert config.train.num_steps == 4400 and config.diffusion.p_uncond == 0.2
  assert config.data.pair_fraction is None and config.get("prior") is None  # optional stays unset / absent


def test_unknown_and_missing_keys_are_named():
  config = shapes_default.get_config()
  config.sample.stepz = 3
  del config.optim.lr
  with pytest.raises(ValueError, match=r"unknown config key\(s\): sample.stepz \(did you mean 'steps'\?\); "
                                       r"missing config key\(s\) or section\(s\): optim.lr"):
    config_keys.complete(config)
  with pytest.raises(ValueError, match=r"missing config key\(s\) or section\(s\): train.num_steps"):
    config_keys.section("train", batch_size=8)
  with pytest.raises(ValueError, match=r"train.num_stepz \(did you mean 'num_steps'\?\)"):
    config_keys.section("train", batch_size=8, num_steps=2, num_stepz=3)


def test_a_section_is_complete_and_its_optional_values_stay_settable():
  section = config_keys.section("diffusion", p_uncond=0.1)
  assert set(section) == set(config_keys.DEFAULTS["diffusion"]) and section.p_uncond == 0.1
  assert section.min_snr_gamma is None
  section.min_snr_gamma = 5.0  # a typed placeholder, as --config.diffusion.min_snr_gamma=5 sets it
  with pytest.raises(TypeError):
    section.min_snr_gamma = "five"
  # The logit-normal defaults are the sampler's own keyword defaults.
  assert (section.logit_mean, section.logit_std, section.logit_tail_mean) == (0.0, 1.0,
                                                                             timestep_sampling.DEFAULT_TAIL_MEAN)
