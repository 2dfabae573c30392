"""The family and chain registries: every model has a family, every chain section a chain, roles say what a
U-Net is, and nothing outside the registries tests a family's name."""

import ast
import os

import jax
import pytest

import t2i_jax
from t2i_jax import config_keys, models
from t2i_jax.pipelines import chain as chain_lib, chains, glide, stage as stage_lib
from t2i_jax.train import families
from tests.conftest import load_config

PACKAGE = os.path.dirname(t2i_jax.__file__)
# Where a family's name may be spelled: its registry and the models table.
REGISTRIES = (os.path.join(PACKAGE, "train", "families"), os.path.join(PACKAGE, "models", "__init__.py"))


def test_every_model_has_a_family_and_every_chain_section_a_chain():
  assert set(families.FAMILIES) == set(models.MODELS)
  assert all(families.get(name).name == name for name in families.FAMILIES)
  assert set(chains.CHAINS) == set(config_keys.CHAINS)
  assert {chain.outputs[-1] for chain in chains.CHAINS.values()} == {"upsampler", "image"}
  with pytest.raises(ValueError, match="model.name='parti' is not a model family; use one of 'unet'"):
    families.get("parti")


def _name_tests(path: str) -> list:
  """'file:line' of each comparison of a string with a family's name (==, !=, in, not in a literal tuple)."""
  names, found = set(families.FAMILIES), []
  for node in ast.walk(ast.parse(open(path).read())):
    if not isinstance(node, ast.Compare):
      continue
    for side in [node.left, *node.comparators]:
      values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
      if any(isinstance(v, ast.Constant) and v.value in names for v in values):
        found.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno}")
  return found


def test_no_family_name_is_tested_outside_the_registries(tmp_path):
  found = []
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      path = os.path.join(folder, name)
      if name.endswith(".py") and not path.startswith(REGISTRIES):
        found += _name_tests(path)
  assert found == []
  # The check finds one where there is one.
  probe = tmp_path / "probe.py"
  probe.write_text("def f(config):\n  return config.model.name in ('clip', 'prior')\n")
  assert _name_tests(str(probe)) == [f"{os.path.relpath(probe, PACKAGE)}:2"]


@pytest.mark.parametrize("spec, role", [
    ("shapes_default:runlocal", "text"), ("shapes_inpaint:runlocal", "inpaint"),
    ("shapes_glide_upsampler:runlocal", "super_res"), ("shapes_upsampler:runlocal", "super_res"),
    ("shapes_decoder:runlocal", "decoder"), ("shapes_latent:runlocal", "latent"),
    ("shapes_latent:glide_text,runlocal", "latent"), ("adm_imagenet64:runlocal", "class"),
    ("iddpm_cifar10:runlocal", "unconditional"), ("shapes_clip:runlocal", None), ("shapes_prior:runlocal", None)])
def test_role_says_what_a_u_net_is(spec, role):
  assert families.unet.role(load_config(spec)) == role


@pytest.mark.parametrize("spec, match", [
    ("shapes_latent:runlocal", "a latent U-Net's samples are latents; score the chain config"),
    ("shapes_glide_upsampler:runlocal", "a super-resolution U-Net needs low-resolution inputs"),
    ("shapes_decoder:runlocal", "unCLIP's decoder draws from CLIP embeddings"),
    ("shapes_inpaint:runlocal", "an inpainting U-Net fills a given image"),
    ("adm_imagenet64:runlocal", "this U-Net is not conditioned on text"),
    ("adm_imagenet64:classifier,runlocal", "--mode=eval does not score a 'classifier' model"),
    ("shapes_prior:runlocal", "--mode=eval does not score a 'prior' model")])
def test_eval_refuses_what_it_cannot_score_in_one_line(spec, match):
  config = load_config(spec)
  with pytest.raises(ValueError, match=match) as error:
    families.of(config).check_eval(config)
  assert "\n" not in str(error.value)


def test_families_say_how_they_are_scored_and_sampled():
  evaluated = {name: family.evaluation for name, family in families.FAMILIES.items() if family.evaluation}
  assert evaluated == {"unet": "samples", "clip": "ranking", "autoencoder_kl": "reconstructions",
                       "autoencoder_vq": "reconstructions", "dvae": "reconstructions"}
  default, latent = load_config("shapes_default:runlocal"), load_config("shapes_latent:runlocal")
  assert families.of(default).samples_in_training(default) and not families.of(latent).samples_in_training(latent)
  clip = load_config("shapes_clip:runlocal")
  with pytest.raises(ValueError, match="--mode=sample draws images from a U-Net's workdir"):
    families.of(clip).check_sample(clip, None)
  assert families.tokenizer_for(clip) is not None and families.tokenizer_for(load_config("iddpm_cifar10:runlocal")) is None


def test_a_chain_refuses_bad_inputs_before_loading_anything(tmp_path):
  config = load_config("shapes_glide:runlocal")
  config.glide.update(dict(base_workdir="/nonexistent/base", num_images=0))
  with pytest.raises(ValueError, match="glide.num_images=0: draw at least 1 image per prompt"):
    chain_lib.sample_to_files(glide.CHAIN, config, str(tmp_path / "out"))
  with pytest.raises(ValueError, match="--image: a glide chain samples from prompts"):
    chain_lib.sample_to_files(glide.CHAIN, config, str(tmp_path / "out"), image="a.png")
  with pytest.raises(ValueError, match="--image2 is the end of an interpolation"):
    chain_lib.sample_to_files(glide.CHAIN, config, str(tmp_path / "out"), image2="b.png")
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_stage_loads_with_a_config_whose_optimizer_differs(trained_runlocal):
  """Sampling reads params only: an optim section that changes the optimizer state's tree (no clipping, so
  one transform fewer) still loads the same params."""
  workdir, state = trained_runlocal
  config = stage_lib.read_config(workdir)
  config.optim.grad_clip = 0.0
  config.train.batch_size = 8  # another train section too
  stage = stage_lib.load_stage(workdir, config)
  assert stage.step == 3
  leaves = [float(abs(x).sum()) for x in jax.tree.leaves(stage.params)]
  expected = [float(abs(x).sum()) for x in jax.tree.leaves(state.ema_params)]
  assert leaves == pytest.approx(expected, rel=1e-6)
