"""Released weights in, any run out: converters from other codebases' checkpoints to this one's params.

    python -m t2i_jax.main --mode=convert --source=guided_diffusion_new_order --checkpoint=64x64_diffusion.pt \
        --config=configs/adm_imagenet64.py --workdir=runs/adm64_released
    python -m t2i_jax.main --mode=convert --source=glide --checkpoint=base.pt --config=configs/glide_base64.py \
        --workdir=runs/glide_base_released
    python -m t2i_jax.main --mode=export --config=configs/shapes_default.py --workdir=runs/demo --out=demo.safetensors
    python -m t2i_jax.main --mode=convert --source=t2i_jax --checkpoint=demo.safetensors \
        --config=configs/shapes_default.py --workdir=runs/demo_copy

A converter is convert(state_dict, config) -> params: it maps every one of our param names from a named
source key (common.Assignment) and is refused, with the first offending key and both shapes, on any mismatch.
SOURCES is the one registry of checkpoint formats; the config names which of our architectures the checkpoint
is, except for a format that carries its own (a transformers folder's config.json).
"""

import dataclasses
import functools
import json
import os
from typing import Callable, Dict, Optional

from t2i_jax.convert import common, glide, hf_clip, openai_unet, workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Source:
  """A checkpoint format.

  Attributes:
    convert: (state_dict, config) -> our params for config.model.
    help: what --checkpoint names, and the config it goes with.
    read: --checkpoint's value -> the state dict (default: one file, common.read_state_dict).
    model: --checkpoint's value -> (our model section, data-section values), for a format that records its
      architecture (and tokenizer): the config's model section is replaced by it, its data section updated.
    configure: config -> None, the model settings the format implies beyond its params (set in place).
  """
  convert: Callable
  help: str
  read: Callable = common.read_state_dict
  model: Optional[Callable] = None
  configure: Optional[Callable] = None


def _glide_clip_files(spec: str) -> common.StateDict:
  paths = spec.split(",")
  if len(paths) != 2:
    raise ValueError(f"--checkpoint={spec}: GLIDE's noised CLIP is two files; give them as "
                     "IMAGE_ENCODER.pt,TEXT_ENCODER.pt (clip_image_enc.pt,clip_text_enc.pt).")
  return glide.clip_state_dict(*map(common.read_state_dict, paths))


def _rescaled_timesteps(config) -> None:
  """improved-diffusion fed its models t·1000/T (rescale_timesteps, its default and its released models')."""
  config.model.timestep_scale = 1000.0 / config.diffusion.num_timesteps


def _hf_model_section(folder: str):
  """A transformers CLIPModel folder's architecture; its own tokenizer when the folder holds one."""
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"--checkpoint={folder}: no config.json there; give the folder of a transformers CLIPModel.")
  with open(path) as f:
    model = hf_clip.model_config(json.load(f))
  data = dict(context_length=model.text_ctx)
  if any(os.path.exists(os.path.join(folder, name)) for name in ("tokenizer.json", "vocab.json")):
    data["tokenizer"] = os.path.abspath(folder)
  return model, data


SOURCES: Dict[str, Source] = {
    "improved_diffusion": Source(openai_unet.unet, "an openai/improved-diffusion UNetModel .pt "
                                 "(configs/iddpm_cifar10.py)", configure=_rescaled_timesteps),
    "guided_diffusion": Source(openai_unet.unet, "an openai/guided-diffusion UNetModel .pt with the legacy "
                               "attention order"),
    "guided_diffusion_new_order": Source(functools.partial(openai_unet.unet, use_new_attention_order=True),
                                         "a guided-diffusion UNetModel with use_new_attention_order, as the "
                                         "released 64x64 ImageNet model (configs/adm_imagenet64.py)"),
    "guided_diffusion_classifier": Source(openai_unet.classifier, "a guided-diffusion noisy classifier .pt "
                                          "(configs/adm_imagenet64.py:classifier)"),
    "glide": Source(glide.text_unet, "a glide-text2im base, upsample or base-inpaint .pt "
                    "(configs/glide_base64.py, configs/glide_upsample256.py)"),
    "glide_clip": Source(glide.noised_clip, "GLIDE's noised CLIP as IMAGE_ENCODER.pt,TEXT_ENCODER.pt",
                         read=_glide_clip_files),
    "hf_clip": Source(lambda state_dict, config: hf_clip.clip(state_dict, config.model),
                      "a transformers CLIPModel folder (config.json and model.safetensors or pytorch_model.bin)",
                      read=hf_clip.read_checkpoint, model=_hf_model_section),
    "t2i_jax": Source(workdir_lib.exported, "a .safetensors file of --mode=export (its config is in it)"),
}


def get(name: str) -> Source:
  if name not in SOURCES:
    raise ValueError(f"--source={name!r} is not a converter; use one of {', '.join(map(repr, SOURCES))}.")
  return SOURCES[name]
