"""GLIDE's U-Nets and noised CLIP, converted, compute what openai/glide-text2im computes; mismatches are refused.

The assets are tiny reference models with every param random, and their outputs on fixed inputs, made by
tests/convert/make_glide_assets.py (its docstring: the reference commit and the command); no torch here.
"""

import functools
import os

import jax
import ml_collections
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.convert import common, glide
from t2i_jax.models import clip as clip_lib

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
# float32 end to end on both sides. The outputs are O(1) (|out| <= 4); the measured differences are 3e-6 or less
# (about 10 float32 ulps at that scale, from the order of summation), a wrong head grouping in one attention
# block alone gives 0.15 to 0.6.
ATOL = 2e-5
TEXT = dict(vocab_size=64, context_length=8, width=32, heads=2, final_ln=True, padding_embedding=True)
# make_glide_assets.UNETS in our terms: attention_resolutions = image_size // the reference's ds.
UNETS = {
    "base": dict(image_size=8, channel_mult=(1, 1), attention_resolutions=(8, 4), text=dict(TEXT, layers=2)),
    "upsample": dict(image_size=16, channel_mult=(1,), attention_resolutions=(16,), text=dict(TEXT, layers=1),
                     super_res=True),
    "inpaint": dict(image_size=8, channel_mult=(1,), attention_resolutions=(8,), text=dict(TEXT, layers=1),
                    inpaint=True),
}
CLIP = dict(name="clip", image_size=16, patch_size=4, vision_width=32, vision_layers=2, vision_heads=2, text_ctx=8,
            vocab_size=64, text_width=32, text_layers=2, text_heads=2, embed_dim=16, timestep_conditioned=True,
            num_timesteps=50, activation="gelu")


def _unet_config(name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model=dict(name="unet", model_channels=32, num_res_blocks=1, num_head_channels=16, learn_sigma=True,
                 use_scale_shift_norm=True, resblock_updown=True, dropout=0.1, **UNETS[name])))


def _assets(name: str):
  return common.read_state_dict(os.path.join(ASSETS, f"glide_{name}.safetensors")), dict(
      np.load(os.path.join(ASSETS, f"glide_{name}_io.npz")))


def _clip_state_dict():
  return glide.clip_state_dict(*(common.read_state_dict(os.path.join(ASSETS, f"glide_clip_{tower}_enc.safetensors"))
                                 for tower in ("image", "text")))


@functools.partial(jax.jit, static_argnums=0)
def _apply_unet(model, params, io):
  kwargs = dict(tokens=io["tokens"], token_mask=io["mask"])
  for key in ("low_res", "inpaint_image", "inpaint_mask"):
    if key in io:
      kwargs[key] = io[key]
  return model.apply({"params": params}, io["x"], io["t"], **kwargs)


@pytest.mark.parametrize("name", list(UNETS))
def test_text_unet_matches_the_reference(name):
  state_dict, io = _assets(name)
  config = _unet_config(name)
  params = glide.text_unet(state_dict, config)
  out = np.asarray(_apply_unet(models.build(config.model), params, {k: v for k, v in io.items() if k != "out"}))
  assert out.shape == io["out"].shape
  assert np.abs(io["out"]).max() > 1.0  # a real signal, not zero-initialised output convs
  np.testing.assert_allclose(out, io["out"], rtol=0, atol=ATOL)


def test_noised_clip_matches_the_reference():
  io = dict(np.load(os.path.join(ASSETS, "glide_clip_io.npz")))
  config = ml_collections.ConfigDict(dict(model=CLIP))
  params = glide.noised_clip(_clip_state_dict(), config)
  model = models.build(config.model)
  apply = jax.jit(model.apply, static_argnames="method")  # op by op, a CLIP forward is ~100 compiles
  image_emb = apply({"params": params}, clip_lib.normalize_images(io["x"]), io["t"], method="encode_image")
  text_emb = apply({"params": params}, io["tokens"], io["text_len"] - 1, method="encode_text")
  np.testing.assert_allclose(np.asarray(image_emb), io["image_emb"], rtol=0, atol=ATOL)
  np.testing.assert_allclose(np.asarray(text_emb), io["text_emb"], rtol=0, atol=ATOL)
  np.testing.assert_allclose(np.exp(params["logit_scale"]), 100.0, rtol=1e-6)


def test_a_renamed_key_is_refused_by_name():
  state_dict, _ = _assets("inpaint")
  state_dict["middle_block.1.encoder_kv.w"] = state_dict.pop("middle_block.1.encoder_kv.weight")
  with pytest.raises(ValueError, match=r"no 'middle_block\.1\.encoder_kv\.weight' \(for our 'middle_attn/encoder_kv"):
    glide.text_unet(state_dict, _unet_config("inpaint"))


def test_a_wrong_shape_is_refused_with_both_shapes():
  state_dict, _ = _assets("inpaint")
  state_dict["transformer_proj.weight"] = np.zeros((128, 48), np.float32)
  with pytest.raises(ValueError, match=r"'text_proj/kernel' has shape \(32, 128\) in our model but \(48, 128\)"):
    glide.text_unet(state_dict, _unet_config("inpaint"))
  clip_sd = _clip_state_dict()
  clip_sd["image_encoder.blocks.input.w_t"] = np.zeros((1000, 32), np.float32)  # the released 1000 steps
  with pytest.raises(ValueError,
                     match=r"'visual/timestep_embedding' has shape \(50, 32\) in our model but \(1000, 32\)"):
    glide.noised_clip(clip_sd, ml_collections.ConfigDict(dict(model=CLIP)))


def test_an_extra_key_is_refused_and_listed():
  state_dict, _ = _assets("inpaint")
  # xf_ar's unembedding head, which our text encoder does not have.
  state_dict["unemb.weight"] = np.zeros((64, 32), np.float32)
  state_dict["unemb.bias"] = np.zeros((64,), np.float32)
  with pytest.raises(ValueError, match=r"2 checkpoint key\(s\) unused, first 'unemb\.bias' \(all: unemb\.bias, "
                                       r"unemb\.weight\)"):
    glide.text_unet(state_dict, _unet_config("inpaint"))


def test_a_config_of_another_architecture_is_refused():
  state_dict, _ = _assets("inpaint")
  # The base's checkpoint class is the config's: without inpaint the first conv reads 3 channels, not 7.
  config = _unet_config("inpaint")
  config.model.inpaint = False
  with pytest.raises(ValueError,
                     match=r"'input_conv/kernel' has shape \(3, 3, 3, 32\) in our model but \(3, 3, 7, 32\)"):
    glide.text_unet(state_dict, config)
  config = _unet_config("inpaint")
  config.model.text.pool = "mean"
  with pytest.raises(ValueError, match="pool='last'"):
    glide.text_unet(state_dict, config)
  clip_config = ml_collections.ConfigDict(dict(model=dict(CLIP, activation="quick_gelu")))
  with pytest.raises(ValueError, match="activation='gelu'"):
    glide.noised_clip(_clip_state_dict(), clip_config)
