"""Collects runs/unclip_vs_glide/*/metrics.json and times.tsv into this folder's metrics.json and a
Markdown table (mean and range over the training seeds, per side).

  .venv/bin/python experiments/unclip_vs_glide/summarize.py [--root runs/unclip_vs_glide]
"""

import argparse
import collections
import glob
import json
import os

import numpy as np

KEYS = ("caption_accuracy", "binding_accuracy", "heldout_caption_accuracy", "color_accuracy", "shape_accuracy",
        "position_accuracy", "fid", "diversity", "render_diversity")
CHAIN_STAGES = ("clip", "prior", "decoder", "upsampler")


def _rows(root):
  """{side: {seed: row}} for the sides glide, unclip (decoder output) and unclip+upsampler."""
  sides = collections.defaultdict(dict)
  for path in sorted(glob.glob(os.path.join(root, "*_s*", "metrics.json"))):
    name, seed = os.path.basename(os.path.dirname(path)).rsplit("_s", 1)
    metrics = json.load(open(path))
    for row in metrics["settings"]:
      side = name if "output" not in row else ("unclip" if row["output"] == "decoder" else "unclip+upsampler")
      sides[side][int(seed)] = row
  return sides


def _minutes(root):
  """{side: {seed: training minutes}} from times.tsv (the chain's are its four stages summed)."""
  out = collections.defaultdict(lambda: collections.defaultdict(float))
  for line in open(os.path.join(root, "times.tsv")):
    seed, name, seconds = line.split("\t")
    side = "glide" if name == "glide" else "unclip" if name in CHAIN_STAGES else None
    if side:
      out[side][int(seed)] += float(seconds) / 60
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--root", default="runs/unclip_vs_glide")
  args = parser.parse_args()
  sides, minutes = _rows(args.root), _minutes(args.root)
  summary = {}
  header = "| side | seeds | train min | " + " | ".join(KEYS) + " |"
  lines = [header, "|" + "---|" * (len(KEYS) + 3)]
  for side in ("glide", "unclip", "unclip+upsampler"):
    runs = sides.get(side, {})
    if not runs:
      continue
    seeds = sorted(runs)
    stats = {k: [runs[s][k] for s in seeds] for k in KEYS}
    mins = [minutes["unclip" if side.startswith("unclip") else side][s] for s in seeds]
    summary[side] = dict(seeds=seeds, train_minutes=mins, image_size=runs[seeds[0]]["image_size"],
                         per_seed={s: {k: runs[s][k] for k in KEYS} for s in seeds})

    def cell(key, values):
      scale = 100 if key.endswith("accuracy") else 1
      v = np.asarray(values) * scale
      return f"{v.mean():.1f} ({v.min():.1f}–{v.max():.1f})" if len(v) > 1 else f"{v[0]:.1f}"
    lines.append(f"| {side} ({summary[side]['image_size']} px) | {','.join(map(str, seeds))} | {cell('m', mins)} | "
                 + " | ".join(cell(k, stats[k]) for k in KEYS) + " |")
  here = os.path.dirname(os.path.abspath(__file__))
  with open(os.path.join(here, "metrics.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
