"""Makes tests/convert/assets/published_shapes.json: the state-dict key shapes of the released models that the
converters read, built by the reference repos' own constructors with their published settings.

Every model is built on torch's meta device (shapes, no memory, no weights) and its `state_dict()` recorded as
{key: [shape...]}, the keys and shapes that the released file holds. tests/convert/test_published_shapes.py
converts zero-stride arrays of these shapes with the project's configs: every param of ours must come from a
key, every key must be used.

Entries (top-level names of the JSON; each {state dict key: shape} unless said):
  iddpm_cifar10            improved-diffusion's cifar10_uncond_50M_500K.pt (README: L_hybrid, cosine, 4000
                           steps; what configs/iddpm_cifar10.py reproduces): script_util.create_model_and_diffusion
                           of model_and_diffusion_defaults() with the README's MODEL_FLAGS and DIFFUSION_FLAGS.
  adm_imagenet64           guided-diffusion's 64x64_diffusion.pt: create_model_and_diffusion with the README's
                           64x64 MODEL_FLAGS (use_new_attention_order True).
  adm_imagenet64_classifier  guided-diffusion's 64x64_classifier.pt: create_classifier of classifier_defaults()
                           with the README's --classifier_depth 4, as scripts/classifier_sample.py builds it.
  glide_base, glide_upsample, glide_base_inpaint  glide-text2im's base.pt, upsample.pt, base_inpaint.pt:
                           create_model_and_diffusion(**options) of model_and_diffusion_defaults() (inpaint=True
                           for base_inpaint) and model_and_diffusion_defaults_upsampler(), as its notebooks do.
  glide_clip_image_enc, glide_clip_text_enc  glide-text2im's clip_image_enc.pt / clip_text_enc.pt: the
                           image_encoder / text_encoder of clip.model_creation.create_clip_model() (its
                           clip/config.yaml).
  hf_clip_vit_b32          transformers' CLIPModel(CLIPConfig()) (the default config is ViT-B/32, the
                           architecture of openai/clip-vit-base-patch32): the keys save_pretrained writes.
  hf_clip_vit_b32_buffers  the model's non-persistent buffers (text_model / vision_model
                           .embeddings.position_ids, [1, 77] and [1, 50]): not saved by this transformers version,
                           but saved by those before 4.31, which made the hub's files (its pytorch_model.bin and
                           model.safetensors hold them); the converter skips them by name.
  hf_clip_vit_b32_config   not shapes: the config.json dict that CLIPConfig().save_pretrained writes.

Reference code, extracted (never copied into this repo) as for the other make_*_assets.py scripts:
  openai/improved-diffusion 1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5 -> /tmp/ref/improved-diffusion
  openai/guided-diffusion   22e0df8183507e13a7813f8d38d51b072ca1e67c -> /tmp/ref/guided-diffusion
  openai/glide-text2im      69b530740eb6cef69442d6180579ef5ba9ef063e -> /tmp/ref/glide
  (git --git-dir=<mirror> archive <commit> | tar -x -C <dir>)
Made with torch 2.13.0+cpu, transformers 5.25.0, numpy 2.4.6, attrs 26.1.0, pyyaml, from the repository root:

  /tmp/torchenv/bin/python tests/convert/make_published_shapes.py --improved=/tmp/ref/improved-diffusion \\
      --guided=/tmp/ref/guided-diffusion --glide=/tmp/ref/glide

A rerun writes a byte-identical file (compact JSON, keys in state-dict order). It prints each entry's
parameter count (buffers excluded).
"""

import argparse
import json
import os
import shlex
import sys
import tempfile

import numpy as np

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
OUT = os.path.join(ASSETS, "published_shapes.json")

# The flags of the READMEs, verbatim.
IDDPM_CIFAR10_FLAGS = ("--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3 "
                       "--diffusion_steps 4000 --noise_schedule cosine")
ADM64_FLAGS = ("--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
               "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 "
               "--num_head_channels 64 --num_res_blocks 3 --resblock_updown True --use_new_attention_order True "
               "--use_fp16 True --use_scale_shift_norm True")
ADM64_CLASSIFIER_FLAGS = "--image_size 64 --classifier_depth 4"


def parse(script_util, defaults: dict, flags: str) -> dict:
  """The reference scripts' own argparse of `flags` over `defaults`, as a dict of its keys."""
  parser = argparse.ArgumentParser()
  script_util.add_dict_to_argparser(parser, defaults)
  return script_util.args_to_dict(parser.parse_args(shlex.split(flags)), defaults.keys())


def shapes(state_dict) -> dict:
  return {k: list(v.shape) for k, v in state_dict.items()}


def openai_models(torch) -> dict:
  from guided_diffusion import script_util as guided
  from improved_diffusion import script_util as improved

  out = {}
  with torch.device("meta"):
    model, _ = improved.create_model_and_diffusion(
        **parse(improved, improved.model_and_diffusion_defaults(), IDDPM_CIFAR10_FLAGS))
    out["iddpm_cifar10"] = model
    model, _ = guided.create_model_and_diffusion(
        **parse(guided, guided.model_and_diffusion_defaults(), ADM64_FLAGS))
    out["adm_imagenet64"] = model
    out["adm_imagenet64_classifier"] = guided.create_classifier(
        **parse(guided, guided.classifier_defaults(), ADM64_CLASSIFIER_FLAGS))
  return out


def glide_models(torch) -> dict:
  from glide_text2im import model_creation
  from glide_text2im.clip.model_creation import create_clip_model

  base = model_creation.model_and_diffusion_defaults()
  upsample = model_creation.model_and_diffusion_defaults_upsampler()
  out = {}
  with torch.device("meta"):
    for name, options in (("glide_base", base), ("glide_upsample", upsample),
                          ("glide_base_inpaint", dict(base, inpaint=True))):
      out[name], _ = model_creation.create_model_and_diffusion(**options)
    clip = create_clip_model(device=torch.device("meta"))
  out["glide_clip_image_enc"] = clip.image_encoder
  out["glide_clip_text_enc"] = clip.text_encoder
  return out


def hf_clip(torch):
  """(model, config.json dict) of transformers' default CLIPModel."""
  import transformers

  config = transformers.CLIPConfig()
  with tempfile.TemporaryDirectory() as tmp:
    config.save_pretrained(tmp)
    with open(os.path.join(tmp, "config.json")) as f:
      config_json = json.load(f)
  with torch.device("meta"):
    model = transformers.CLIPModel(config)
  return model, config_json


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--improved", required=True, help="extracted openai/improved-diffusion")
  parser.add_argument("--guided", required=True, help="extracted openai/guided-diffusion")
  parser.add_argument("--glide", required=True, help="extracted openai/glide-text2im")
  args = parser.parse_args()
  sys.path[:0] = [os.path.abspath(p) for p in (args.improved, args.guided, args.glide)]
  if not hasattr(np, "bool"):
    np.bool = bool  # glide-text2im's clip/attention.py predates numpy 1.24
  import torch
  import transformers

  models = {**openai_models(torch), **glide_models(torch)}
  hf_model, hf_config = hf_clip(torch)
  models["hf_clip_vit_b32"] = hf_model

  result = {}
  for name, model in models.items():
    state = model.state_dict()
    if name == "hf_clip_vit_b32":
      # What save_pretrained leaves out of the file: keys it is told to ignore, and tied weights (none in CLIP).
      for pattern in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state = {k: v for k, v in state.items() if pattern not in k}
      buffers = {k: v for k, v in model.named_buffers() if k not in state}
      result["hf_clip_vit_b32"] = shapes(state)
      result["hf_clip_vit_b32_buffers"] = shapes(buffers)
      result["hf_clip_vit_b32_config"] = hf_config
    else:
      result[name] = shapes(state)
    params = sum(p.numel() for p in model.parameters())
    stored = sum(int(np.prod(s)) for s in shapes(state).values())
    print(f"{name}: {len(state)} keys, {params:,} params, {stored:,} values in the state dict")
  print("hf_clip_vit_b32_buffers:", result["hf_clip_vit_b32_buffers"])
  os.makedirs(ASSETS, exist_ok=True)
  with open(OUT, "w") as f:
    json.dump(result, f, separators=(",", ":"))
    f.write("\n")
  print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
  print(f"{OUT}: {os.path.getsize(OUT):,} bytes")


if __name__ == "__main__":
  main()
