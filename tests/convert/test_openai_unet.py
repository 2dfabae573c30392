"""convert/openai_unet.py against tiny random models of OpenAI's own code: same outputs, strict refusals.

The assets (tests/convert/assets/openai_*) come from tests/convert/make_openai_unet_assets.py, whose docstring
says how; no torch is needed here. Each architecture below is the asset's reference model in our config terms
(attention_resolutions in pixels where the reference counts downsampling factors).
"""

import functools
import os

import jax
import ml_collections
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.convert import common, openai_unet

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
UNET = dict(name="unet", in_channels=3, model_channels=32, num_res_blocks=1, dropout=0.0, dtype="float32")
CASES = {
    # improved-diffusion UNetModel(attention_resolutions=(2,), num_heads=2, use_scale_shift_norm=False, ...)
    "openai_iddpm_unet": (openai_unet.unet, dict(
        UNET, image_size=8, out_channels=3, learn_sigma=True, channel_mult=(1, 1), attention_resolutions=(4,),
        num_heads=2, num_head_channels=-1, use_scale_shift_norm=False, resblock_updown=False, num_classes=3,
        class_null=False), {}),
    # guided-diffusion UNetModel(attention_resolutions=(1, 2), num_head_channels=16, resblock_updown=True, ...)
    "openai_adm_unet": (openai_unet.unet, dict(
        UNET, image_size=8, out_channels=3, learn_sigma=True, channel_mult=(1, 1), attention_resolutions=(8, 4),
        num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True, num_classes=3, class_null=False), {}),
    # guided-diffusion UNetModel(use_new_attention_order=True, num_head_channels=8, ...)
    "openai_adm_unet_new_order": (openai_unet.unet, dict(
        UNET, image_size=8, out_channels=3, learn_sigma=False, channel_mult=(1, 1), attention_resolutions=(4,),
        num_head_channels=8, use_scale_shift_norm=True, resblock_updown=False), dict(use_new_attention_order=True)),
    # guided-diffusion EncoderUNetModel(pool="attention", out_channels=5, ...)
    "openai_adm_classifier": (openai_unet.classifier, dict(
        name="classifier", image_size=8, in_channels=3, model_channels=32, num_res_blocks=1, channel_mult=(1, 1),
        attention_resolutions=(8, 4), num_head_channels=8, num_classes=5, use_scale_shift_norm=True,
        resblock_updown=True, dtype="float32"), {}),
}
# float32 on both sides from the same (float16-valued) weights: what is left is summation order (measured:
# at most 1.4e-6 of the output's scale).
RELATIVE_TOLERANCE = 1e-5


@functools.lru_cache(maxsize=None)
def _asset(name):
  """(state dict, {x, t, y?, out}) of one reference model."""
  state = common.read_state_dict(f"{ASSETS}/{name}.safetensors")
  with np.load(f"{ASSETS}/{name}_io.npz") as io:
    return state, {k: io[k] for k in io.files}


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, x, t, kwargs):
  return model.apply({"params": params}, x, t, **kwargs)


def _run(name, **flags):
  """(our output, the reference's) for one asset converted with its case's converter and config."""
  convert, section, case_flags = CASES[name]
  state, io = _asset(name)
  params = convert(state, ml_collections.ConfigDict(dict(model=section)), **{**case_flags, **flags})
  kwargs = {"y": io["y"]} if "y" in io else {}
  return np.asarray(_apply(models.build(section), params, io["x"], io["t"], kwargs)), io["out"]


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_match_the_reference(name):
  ours, theirs = _run(name)
  assert ours.shape == theirs.shape
  scale = np.abs(theirs).max()
  assert scale > 0.1  # random output convs: the parity below is not that of zeros
  assert np.abs(ours - theirs).max() < RELATIVE_TOLERANCE * scale


def test_attention_order_flag_matters():
  # The same weights read with QKVAttentionLegacy's (head, q|k|v) order instead: far off, so the flag is needed
  # and the parity above checks the regrouping.
  ours, theirs = _run("openai_adm_unet_new_order", use_new_attention_order=False)
  assert np.abs(ours - theirs).max() > 0.05 * np.abs(theirs).max()


def _convert(name, state=None, **section_changes):
  convert, section, flags = CASES[name]
  return convert(_asset(name)[0] if state is None else state, {**section, **section_changes}, **flags)


def test_a_renamed_key_is_refused_by_name():
  state = dict(_asset("openai_adm_unet")[0])
  state["middle_block.1.qkv_fused.weight"] = state.pop("middle_block.1.qkv.weight")
  with pytest.raises(ValueError, match=r"no 'middle_block\.1\.qkv\.weight' \(for our 'middle_attn/qkv/kernel'\)"):
    _convert("openai_adm_unet", state)


def test_a_wrong_shape_is_refused_with_both_shapes():
  state = dict(_asset("openai_iddpm_unet")[0])
  state["out.2.weight"] = state["out.2.weight"][:4]  # 4 output channels where the config says 2·3
  with pytest.raises(ValueError, match=r"'out_conv/kernel' has shape \(3, 3, 32, 6\) in our model but \(3, 3, 32, 4\)"):
    _convert("openai_iddpm_unet", state)
  # A config that differs from the checkpoint: a null-label row the reference never had.
  with pytest.raises(ValueError, match=r"'label_emb/embedding' has shape \(4, 128\) in our model but \(3, 128\)"):
    _convert("openai_iddpm_unet", class_null=True)


def test_extra_keys_are_refused_and_listed():
  state = dict(_asset("openai_adm_classifier")[0])
  state["out.3.weight"] = np.zeros((5, 32, 1, 1), np.float32)
  state["out.3.bias"] = np.zeros((5,), np.float32)
  with pytest.raises(ValueError, match=r"2 checkpoint key\(s\) unused, first 'out\.3\.bias' \(all: out\.3\.bias, "
                                       r"out\.3\.weight\)"):
    _convert("openai_adm_classifier", state)


def test_another_architecture_is_refused():
  # Attention where the checkpoint has none: the first missing key is named.
  with pytest.raises(ValueError, match=r"no 'input_blocks\.1\.1\.norm\.weight' \(for our 'down_0_attn_0/norm/"):
    _convert("openai_adm_unet_new_order", attention_resolutions=(8, 4))
  # Conv downsampling where the checkpoint has ResBlocks.
  with pytest.raises(ValueError, match=r"no 'input_blocks\.2\.0\.op\.weight'"):
    _convert("openai_adm_unet", resblock_updown=False)
  # guided-diffusion's 512x512 channel_mult: no config of ours builds it.
  with pytest.raises(ValueError, match=r"channel_mult=\(0\.5, 1\): our unet takes whole channel multipliers"):
    _convert("openai_adm_unet", channel_mult=(0.5, 1))
  with pytest.raises(ValueError, match="builds a NoisyClassifier; this converter fills a UNet"):
    openai_unet.unet(_asset("openai_adm_classifier")[0], CASES["openai_adm_classifier"][1])


def test_improved_diffusion_checkpoints_embed_rescaled_timesteps(tmp_path):
  """--source=improved_diffusion sets timestep_scale = 1000/T (its models saw t·1000/T), and the U-Net then
  embeds t·scale: the same output as the unscaled network fed t·scale directly."""
  import t2i_jax.convert
  from t2i_jax.convert import workdir as workdir_lib
  from t2i_jax.pipelines import stage as stage_lib

  from configs import iddpm_cifar10

  _, section, _ = CASES["openai_iddpm_unet"]
  config = iddpm_cifar10.get_config()  # T = 4000, as the released CIFAR-10 models
  config.model = ml_collections.ConfigDict(section)
  out = workdir_lib.convert(t2i_jax.convert.get("improved_diffusion"), f"{ASSETS}/openai_iddpm_unet.safetensors",
                            config, str(tmp_path / "run"), "improved_diffusion")
  stage = stage_lib.load_stage(out)
  assert stage.model.timestep_scale == 0.25
  _, io = _asset("openai_iddpm_unet")
  t = np.array([3000, 40], np.int32)
  scaled = _apply(stage.model, stage.params, io["x"], t, {"y": io["y"]})
  unscaled = _apply(models.build(section), stage.params, io["x"], t * 0.25, {"y": io["y"]})
  np.testing.assert_allclose(scaled, unscaled, rtol=1e-6, atol=1e-6)
