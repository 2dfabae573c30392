"""Each converter's name map covers the released architectures exactly: every param of ours from one of the
published state dict's keys, every key used, every shape as our config builds it.

assets/published_shapes.json holds the {key: shape} of each released file, recorded from the reference repos'
own constructors on torch's meta device (make_published_shapes.py beside this file; its docstring says how).
Here each is filled with zero-stride arrays (np.broadcast_to of one float32 zero: no memory however large the
model) and converted with the project's config for it; common.Assignment refuses any missing, unused or
misshapen key, and the params it returns must number the config's count_params and the README's Models table.
No weights, no torch.
"""

import functools
import json
import os

import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from configs import adm_imagenet64, glide_base64, glide_upsample256, iddpm_cifar10
from t2i_jax import convert, models
from t2i_jax.convert import glide, hf_clip
from t2i_jax.models import clip as clip_lib

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
ZERO = np.zeros((), np.float32)


@functools.lru_cache(maxsize=None)
def _published():
  with open(os.path.join(ASSETS, "published_shapes.json")) as f:
    return json.load(f)


def _zeros(name):
  """{key: a zero-stride float32 array of the key's shape} of one published state dict."""
  return {k: np.broadcast_to(ZERO, tuple(shape)) for k, shape in _published()[name].items()}


def _glide_inpaint_config():
  # The project's inpainting model is the base text U-Net with the masked image and mask as extra input
  # channels (configs/shapes_inpaint.py sets model.inpaint on its base the same way).
  config = glide_base64.get_config()
  config.model.inpaint = True
  return config


def _hf_clip_config():
  return ml_collections.ConfigDict(dict(model=hf_clip.model_config(_published()["hf_clip_vit_b32_config"])))


def _glide_clip_config():
  return ml_collections.ConfigDict(dict(model=clip_lib.glide_noised_config()))


# name: (the published entries whose keys it reads, the converter's name in convert.SOURCES (what
# --mode=convert runs), our config, the README's count or None).
CASES = {
    "iddpm_cifar10": (("iddpm_cifar10",), "improved_diffusion", iddpm_cifar10.get_config, 52_546_438),
    "adm_imagenet64": (("adm_imagenet64",), "guided_diffusion_new_order", adm_imagenet64.get_config, 295_904_454),
    "adm_imagenet64_classifier": (("adm_imagenet64_classifier",), "guided_diffusion_classifier",
                                  lambda: adm_imagenet64.get_config("classifier"), 65_438_568),
    "glide_base": (("glide_base",), "glide", glide_base64.get_config, 385_030_726),
    "glide_upsample": (("glide_upsample",), "glide", glide_upsample256.get_config, 398_361_286),
    "glide_base_inpaint": (("glide_base_inpaint",), "glide", _glide_inpaint_config, None),
    "glide_noised_clip": (("glide_clip_image_enc", "glide_clip_text_enc"), "glide_clip", _glide_clip_config, None),
    "hf_clip_vit_b32": (("hf_clip_vit_b32",), "hf_clip", _hf_clip_config, 151_277_313),
}


def _state(entries):
  if entries == ("hf_clip_vit_b32",):
    # As the hub's openai/clip-vit-base-patch32 files hold it: with the position_ids buffers (int64) that
    # transformers < 4.31 saved, which the converter skips by name (current versions do not save them).
    state = _zeros("hf_clip_vit_b32")
    state.update({k: np.broadcast_to(np.zeros((), np.int64), tuple(shape))
                  for k, shape in _published()["hf_clip_vit_b32_buffers"].items()})
    return state
  if len(entries) == 2:  # GLIDE's noised CLIP: two files, joined as the converter reads them
    return glide.clip_state_dict(*map(_zeros, entries))
  return _zeros(entries[0])


def _count(params):
  return sum(int(np.size(v)) for v in traverse_util.flatten_dict(params).values())


@pytest.mark.parametrize("name", list(CASES))
def test_converter_covers_the_published_state_dict(name):
  entries, source, get_config, published_count = CASES[name]
  config = get_config()
  params = convert.get(source).convert(_state(entries), config)  # refuses any missing, unused or misshapen key
  count = _count(params)
  assert count == models.count_params(config.model)
  if published_count is not None:
    assert count == published_count
  # Every value of the files is in our params and nothing else, but for GLIDE's CLIP: our zero key bias (12
  # blocks a tower, 768 and 512 channels) and the logit scale, which its files do not hold.
  values = sum(int(np.prod(shape)) for entry in entries for shape in _published()[entry].values())
  assert count == values + (12 * (768 + 512) + 1 if name == "glide_noised_clip" else 0)
  # No copy of the (here zero-stride) source where a layout is a view: only CLIP's q|k|v concatenations are
  # materialised, 3·W² + 3·W values a block.
  copied = sum(v.size for v in traverse_util.flatten_dict(params).values() if any(np.asarray(v).strides))
  assert copied == (12 * 3 * (768 * 768 + 768 + 512 * 512 + 512) if "clip" in name else 0)


def test_our_default_clip_is_the_released_vit_b32():
  # So the hf_clip_vit_b32 case above also checks clip.default_config()'s count: OpenAI's 151,277,313.
  assert _hf_clip_config().model.to_dict() == clip_lib.default_config().to_dict()


def test_the_skipped_buffers_are_transformers():
  assert sorted(_published()["hf_clip_vit_b32_buffers"]) == sorted(hf_clip.BUFFERS)
