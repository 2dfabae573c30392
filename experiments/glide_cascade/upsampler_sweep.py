"""The cascade's caption accuracy against how the upsampler samples: its input's noise level and its start.

The upsampler trained on box-downsampled renders noised at levels {0, …, low_res.noise_aug_max} and is fed
the base's samples noised at one fixed level, low_res.noise_aug_sample (Imagen §2.5 sweeps this level). Its
reverse process starts from noise at T, or at a timestep t from its bilinearly upsampled input noised to t
(SDEdit; `SampleSettings.start_timestep`). This script scores the cascade of trained stages at each level
and start, everything else as the chain config, and the upsampler fed renders of the prompts at the base's
size (at the last level, each start): what it loses by itself. `--bilinear` adds a row of the base's
samples resized bilinearly to the upsampler's size: what the upsampler adds over a plain resize.

  PYTHONPATH=. .venv/bin/python experiments/glide_cascade/upsampler_sweep.py --base=runs/unclip_vs_glide/glide_s0 \
      --upsampler=runs/glide_cascade/upsampler_s0 --levels=0,50,100 --starts=0,500 --out=runs/glide_cascade/sweep_s0.json
"""

import argparse
import dataclasses
import json

import numpy as np

from configs import shapes_glide
from t2i_jax.data import shapes
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import glide, text_to_image

COLUMNS = ("input", "level", "start", "output", "image_size", "caption_accuracy", "color_accuracy", "shape_accuracy",
           "size_accuracy", "position_accuracy", "binding_accuracy", "fid")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", required=True)
  parser.add_argument("--upsampler", required=True)
  parser.add_argument("--levels", default="100")
  parser.add_argument("--starts", default="0", help="upsampler start timesteps (0: from noise at T)")
  parser.add_argument("--bilinear", action="store_true", help="also score the base's samples resized bilinearly")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  config = shapes_glide.get_config()
  config.glide.update(dict(base_workdir=args.base, upsampler_workdir=args.upsampler))
  cascade = glide.load(config.glide)
  settings = glide.Settings.from_config(config.glide, cascade)
  levels = [int(v) for v in args.levels.split(",")]
  starts = [int(v) for v in args.starts.split(",")]

  # "renders": the upsampler fed renders of the prompts at the base's size instead of the base's samples.
  scenes = evaluate.prompt_scenes(config.eval.num_single, config.eval.num_heldout, config.eval.num_pair,
                                  config.eval.seed)
  scene_of = dict(zip(evaluate.prompts_for(scenes), scenes))
  size = cascade.base.model.image_size

  base_samples = {}  # the base's samples of (prompts, seed), drawn once for every row

  def sample_base(prompts, seed):
    key = (tuple(prompts), seed)
    if key not in base_samples:
      base_samples[key] = text_to_image.generate(cascade.base, prompts, settings.reseeded(seed).base)
    return base_samples[key]

  def sample_fn(setting, prompts, seed):
    high = cascade.upsampler.model.image_size
    if setting["input"] == "base samples, bilinear":
      base = sample_base(prompts, seed)
      return {"base": base, "upsampler": text_to_image.upsample_bilinear(base, high)}
    upsampler_config = cascade.upsampler.config.copy_and_resolve_references()
    upsampler_config.low_res.noise_aug_sample = setting["level"]
    upsampler = dataclasses.replace(cascade.upsampler, config=upsampler_config)
    run = dataclasses.replace(settings.reseeded(seed).upsampler, start_timestep=setting["start"])
    if setting["input"] == "base samples":
      base = sample_base(prompts, seed)
      return {"base": base, "upsampler": text_to_image.super_resolve(upsampler, base, run, prompts)}
    rng = np.random.default_rng(seed)
    renders = np.stack([shapes.to_float(shapes.render(scene_of[p].objects, scene_of[p].relation, size, rng))
                        for p in prompts])
    return {"upsampler": text_to_image.super_resolve(upsampler, renders, run, prompts)}

  rows = evaluate.evaluate_fn(sample_fn, [dict(input="base samples", level=v, start=t) for v in levels for t in starts]
                              + [dict(input="renders", level=levels[-1], start=t) for t in starts]
                              + ([dict(input="base samples, bilinear", level="–", start="–")] if args.bilinear else []),
                              config.eval)
  with open(args.out, "w") as f:
    json.dump(dict(base=args.base, upsampler=args.upsampler, upsampler_setting=config.glide.upsampler, rows=rows),
              f, indent=2)
  print(evaluate.format_table(rows, COLUMNS))


if __name__ == "__main__":
  main()
