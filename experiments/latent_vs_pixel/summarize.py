"""The latent_vs_pixel table: mean (range) over seeds of the training steps and the oracle's metrics (from each
--mode=eval's metrics.json). Speed is benchmarks/latent_vs_pixel.py's, measured side by side: the runs here
shared the CPU with each other, so their own images/s and seconds per image are not comparable.

  python experiments/latent_vs_pixel/summarize.py \
      --pixel runs/unclip_vs_glide/glide_s0 runs/unclip_vs_glide/glide_s1 runs/unclip_vs_glide/glide_s2 \
      --latent runs/latent/unet_s0 runs/latent/unet_s1 runs/latent/unet_s2 \
      --latent_eval runs/latent/chain_s0 runs/latent/chain_s1 runs/latent/chain_s2 \
      --glide_text runs/latent/unet_glide_text_s0 runs/latent/unet_glide_text_s1 runs/latent/unet_glide_text_s2 \
      --glide_text_eval runs/latent/chain_glide_text_s0 runs/latent/chain_glide_text_s1 runs/latent/chain_glide_text_s2
"""

import argparse
import json
import os

import numpy as np

METRICS = ("caption_accuracy", "color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy",
           "binding_accuracy", "heldout_caption_accuracy", "fid", "diversity")


def steps(workdir: str) -> int:
  """The last logged step of a training workdir."""
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]["step"]


def row(train_dir: str, eval_dir: str) -> dict:
  metrics = json.load(open(os.path.join(eval_dir, "metrics.json")))
  return dict(steps=steps(train_dir), **{k: metrics[k] for k in METRICS})


def cell(key, values):
  scale = 100 if key.endswith("accuracy") else 1
  fmt = {"steps": "{:.0f}", "fid": "{:.0f}"}.get(key, "{:.1f}")
  mean, low, high = (fmt.format(scale * f(values)) for f in (np.mean, np.min, np.max))
  return mean if low == high else f"{mean} ({low}–{high})"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--pixel", nargs="+", required=True)
  parser.add_argument("--latent", nargs="+", required=True)
  parser.add_argument("--latent_eval", nargs="+", required=True)
  parser.add_argument("--glide_text", nargs="*", default=())
  parser.add_argument("--glide_text_eval", nargs="*", default=())
  args = parser.parse_args()
  models = {"pixel (shapes_default)": [row(d, d) for d in args.pixel],
            "latent, CLIP token states (shapes_latent)": [row(t, e) for t, e in zip(args.latent, args.latent_eval)]}
  if args.glide_text:
    models["latent, own text encoder (shapes_latent:glide_text)"] = [
        row(t, e) for t, e in zip(args.glide_text, args.glide_text_eval)]
  keys = ("steps",) + METRICS
  print("| model | seeds | " + " | ".join(keys) + " |")
  print("|---|---|" + "---|" * len(keys))
  for name, rows in models.items():
    print(f"| {name} | {len(rows)} | " + " | ".join(cell(k, [r[k] for r in rows]) for k in keys) + " |")


if __name__ == "__main__":
  main()
