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

import functools
import json
import os
from typing import Dict

from t2i_jax.convert import common, glide, hf_clip, openai_unet, workdir as workdir_lib


Source = common.Source


def _glide_clip_files(spec: str) -> common.StateDict:
  paths = spec.split(",")
  if len(paths) != 2:
    raise ValueError(f"--checkpoint={spec}: GLIDE's noised CLIP is two files; give them as "
                     "IMAGE_ENCODER.pt,TEXT_ENCODER.pt (clip_image_enc.pt,clip_text_enc.pt).")
  return glide.clip_state_dict(*map(common.read_state_dict, paths))


def _rescaled_timesteps(path: str, config):
  """improved-diffusion fed its models t·1000/T (rescale_timesteps, its default and its released models')."""
  del path
  config.model.timestep_scale = 1000.0 / config.diffusion.num_timesteps
  return config


def _hf_folder_config(folder: str, config):
  """--config with a transformers CLIPModel folder's architecture as its model section, the text tower's context,
  and the folder's own tokenizer when it holds one."""
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"--checkpoint={folder}: no config.json there; give the folder of a transformers CLIPModel.")
  with open(path) as f:
    config.model = hf_clip.model_config(json.load(f))
  config.data.context_length = config.model.text_ctx
  if any(os.path.exists(os.path.join(folder, name)) for name in ("tokenizer.json", "vocab.json")):
    config.data.tokenizer = os.path.abspath(folder)
  return config


SOURCES: Dict[str, Source] = {
    "improved_diffusion": Source(openai_unet.unet, "an openai/improved-diffusion UNetModel .pt "
                                 "(configs/iddpm_cifar10.py)", config=_rescaled_timesteps),
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
                      read=hf_clip.read_checkpoint, config=_hf_folder_config),
    "t2i_jax": workdir_lib.EXPORTED,
}


def get(name: str) -> Source:
  if name not in SOURCES:
    raise ValueError(f"--source={name!r} is not a converter; use one of: "
                     f"{'; '.join(f'{n} ({s.help})' for n, s in SOURCES.items())}.")
  return SOURCES[name]
