"""Classifier-free guidance against CLIP guidance on the GLIDE-style default (GLIDE §4, Figure/Table of
guidance comparisons): caption and binding by the shapes oracle, CLIP score by a separately trained clean
CLIP, FID and diversity, one row per (guidance kind, scale).

  PYTHONPATH=. .venv/bin/python experiments/glide_guidance/run.py --base=runs/unclip_vs_glide/glide_s0 \
      --noised_clip=runs/glide_guidance/noised_clip_s0 --clip=runs/glide_guidance/clip24_s0 \
      --out=runs/glide_guidance/s0 --cfg=1,2,3,5 --clip_scales=30,100,300,1000

Every setting samples ancestrally (DDPM, 25 steps, the base's learned variance, from its lowest timestep,
t = 150 for the default), as GLIDE's CLIP-guided samples were: the gradient moves each step's mean by
scale·Σ·∇. (Through the DDIM-family samplers the same gradient shifts x0 by scale·(1 − ᾱ)/√ᾱ·∇, hundreds
of times more at the first steps: scale 1 saturated 89% of the pixels.) A CLIP-guided row has
classifier-free guidance 1 (GLIDE compared the two methods alone).
"""

import argparse
import json
import os

import numpy as np

from t2i_jax import config_keys
from t2i_jax.eval import clip_score, evaluate
from t2i_jax.pipelines import images as images_lib, stage as stage_lib, text_to_image

COLUMNS = ("kind", "scale", "caption_accuracy", "binding_accuracy", "heldout_caption_accuracy", "color_accuracy",
           "shape_accuracy", "position_accuracy", "clip_score", "fid", "diversity", "seconds_per_image")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", required=True, help="the text U-Net's workdir")
  parser.add_argument("--noised_clip", required=True, help="configs/shapes_noised_clip.py's workdir")
  parser.add_argument("--clip", required=True, help="a clean CLIP at the base's size, for the CLIP score")
  parser.add_argument("--out", required=True)
  parser.add_argument("--cfg", default="1,2,3,5", help="classifier-free guidance scales")
  parser.add_argument("--clip_scales", default="30,100,300,1000", help="CLIP guidance scales (classifier-free 1)")
  parser.add_argument("--sampler", default="ddpm:25", help="METHOD:STEPS of every row")
  args = parser.parse_args()

  base = stage_lib.load_stage(args.base)
  noised = stage_lib.load_stage(args.noised_clip)
  judge = stage_lib.load_stage(args.clip)
  evaluation = config_keys.section_of(config_keys.complete(base.config), "eval")
  settings = [dict(kind="classifier-free", scale=float(w)) for w in args.cfg.split(",")]
  settings += [dict(kind="clip", scale=float(s)) for s in args.clip_scales.split(",")]
  method, steps = args.sampler.split(":")
  scores = {}  # str(setting) -> CLIP scores of every sample drawn with it
  grids = {}

  def sample_fn(setting, prompts, seed):
    cfg = setting["scale"] if setting["kind"] == "classifier-free" else 1.0
    sample = text_to_image.SampleSettings.from_config(base.config.sample, method=method, steps=int(steps),
                                                      guidance=cfg, seed=seed)
    grad_fn = (text_to_image.clip_guidance(noised, base, prompts, setting["scale"])
               if setting["kind"] == "clip" else None)
    images = text_to_image.generate(base, prompts, sample, grad_fn)
    scores.setdefault(str(setting), []).append(
        clip_score.clip_scores(judge.model, judge.params, np.asarray(images), prompts, judge.tokenizer))
    grids.setdefault(str(setting), (images_lib.to_uint8(np.asarray(images[:8])), list(prompts[:8])))
    return {"": images}

  rows = evaluate.evaluate_fn(sample_fn, settings, evaluation)
  os.makedirs(args.out, exist_ok=True)
  for row in rows:
    key = str(dict(kind=row["kind"], scale=row["scale"]))
    row["clip_score"] = float(np.mean(np.concatenate(scores[key])))
    images, captions = grids[key]
    images_lib.save_images(images, captions, args.out, f"{row['kind']}_{row['scale']:g}", columns=8)
  with open(os.path.join(args.out, "metrics.json"), "w") as f:
    json.dump(dict(base=args.base, base_step=base.step, noised_clip=args.noised_clip, clip=args.clip, rows=rows),
              f, indent=2)
  table = evaluate.format_table(rows, COLUMNS)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  main()
