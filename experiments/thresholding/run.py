"""Imagen's dynamic thresholding against static clipping on the default text U-Net, across guidance scales.

For each threshold ("static": x0 clipped to [-1, 1]; "dynamic": Imagen's, percentile 0.995) and guidance
scale w, the oracle's caption accuracy and FID (eval.evaluate, the --mode=eval prompt set at the size
below), a grid of the first 8 prompts per setting (<out>_grid.png; grid_s1.png is seed 1's) and the colour saturation of the samples: the mean HSV saturation of foreground pixels (those far
from the renders' grey background), against the same figure of renders of the same prompts.

  PYTHONPATH=. python experiments/thresholding/run.py --workdir=runs/unclip_vs_glide/glide_s0 \
      --out=experiments/thresholding/metrics_s0.json
"""

import argparse
import json

import numpy as np

from t2i_jax import config_keys
from t2i_jax.data import shapes
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import images as images_lib, stage as stage_lib, text_to_image

# A pixel is foreground when a channel is this far (of 255) from the background's grey.
FOREGROUND_DISTANCE = 40


def foreground_saturation(images: np.ndarray) -> float:
  """Mean HSV saturation (max − min) / max of the foreground pixels of uint8 images [N, H, W, 3]."""
  x = images.astype(np.float32)
  foreground = np.abs(x - np.asarray(shapes.BACKGROUND_RGB, np.float32)).max(axis=-1) > FOREGROUND_DISTANCE
  high, low = x.max(axis=-1), x.min(axis=-1)
  saturation = (high - low) / np.maximum(high, 1.0)
  return float(saturation[foreground].mean()) if foreground.any() else 0.0


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--scales", default="1,3,8,15")
  parser.add_argument("--thresholds", default="static,dynamic")
  parser.add_argument("--setting", default="dpm++2m:20", help="METHOD:STEPS")
  parser.add_argument("--num_single", type=int, default=100)
  parser.add_argument("--num_pair", type=int, default=50)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  stage = stage_lib.load_stage(args.workdir)
  evaluation = config_keys.section("eval", num_single=args.num_single, num_heldout=args.num_single // 5,
                                   num_pair=args.num_pair, num_diverse=10)
  method, steps = args.setting.split(":")
  settings = [dict(method=method, steps=int(steps), guidance=float(w), threshold=threshold)
              for threshold in args.thresholds.split(",") for w in args.scales.split(",")]
  samples = {}

  def sample_fn(setting, prompts, seed):
    sampler = text_to_image.SampleSettings.from_config(stage.config.sample, seed=seed, **setting)
    images = text_to_image.generate(stage, prompts, sampler)
    samples.setdefault(str(setting), []).append(images_lib.to_uint8(np.asarray(images)))
    return {"": images}

  rows = evaluate.evaluate_fn(sample_fn, settings, evaluation)
  scenes = evaluate.prompt_scenes(evaluation.num_single, evaluation.num_heldout, evaluation.num_pair, evaluation.seed)
  renders = evaluate.reference_images(scenes, stage.model.image_size, evaluation.seed)
  num = len(scenes)
  grid, labels = [], []  # a row of the first 8 prompts per setting
  for row, setting in zip(rows, settings):
    generated = np.concatenate(samples[str(setting)])[:num]  # the prompt set's batches come first
    row.update(saturation=foreground_saturation(generated), render_saturation=foreground_saturation(renders))
    grid.append(generated[:8])
    labels += [f"{setting['threshold']} w={setting['guidance']:g}: {p}" for p in evaluate.prompts_for(scenes[:8])]
    print(f"{setting['threshold']:8s} w={setting['guidance']:<5g} caption {100 * row['caption_accuracy']:5.1f}  "
          f"FID {row['fid']:6.1f}  saturation {row['saturation']:.3f} (renders {row['render_saturation']:.3f})",
          flush=True)
  images_lib.write_png(args.out[:-len(".json")] + "_grid.png",
                       images_lib.captioned_grid(np.concatenate(grid), labels, columns=8, scale=3))
  with open(args.out, "w") as f:
    json.dump(dict(workdir=args.workdir, step=stage.step, rows=rows), f, indent=2)


if __name__ == "__main__":
  main()
