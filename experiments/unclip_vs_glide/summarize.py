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
        "size_accuracy", "position_accuracy", "fid", "diversity", "correct_diversity", "render_diversity")
CLIP_KEYS = ("color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy", "relation_accuracy",
             "image_to_text_r1", "text_to_image_r1", "heldout_color_accuracy", "heldout_shape_accuracy",
             "heldout_size_accuracy", "heldout_position_accuracy")
CHAIN_STAGES = ("clip", "prior", "decoder", "upsampler")


def _rows(root):
  """{side: {seed: row}} for the sides glide, unclip (decoder output) and unclip+upsampler."""
  sides = collections.defaultdict(dict)
  for path in sorted(glob.glob(os.path.join(root, "*_s[0-9]*", "metrics.json"))):
    name, seed = os.path.basename(os.path.dirname(path)).rsplit("_s", 1)
    metrics = json.load(open(path))
    for row in metrics["settings"]:
      side = name if "output" not in row else ("unclip" if row["output"] == "decoder" else "unclip+upsampler")
      sides[side][int(seed)] = row
  return sides


def _clip_rows(root):
  """{seed: the CLIP eval's metrics} of each chain's CLIP (--mode=eval on its workdir)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(root, "unclip_s[0-9]*", "clip", "metrics.json"))):
    out[int(path.split("unclip_s")[1].split(os.sep)[0])] = json.load(open(path))
  return out


def _minutes(root):
  """{side: {seed: training minutes}} from times.tsv (the chain's are its four stages summed)."""
  out = collections.defaultdict(lambda: collections.defaultdict(float))
  for line in open(os.path.join(root, "times.tsv")):
    seed, name, seconds = line.split("\t")
    side = "glide" if name == "glide" else "unclip" if name in CHAIN_STAGES else None
    if side:
      out[side][int(seed)] += float(seconds) / 60
  return out


def cell(key, values):
  """mean (min–max) of the values, in percent for accuracies and R@1."""
  scale = 100 if key.endswith(("accuracy", "_r1")) else 1
  v = np.asarray(values, np.float64) * scale
  return f"{v.mean():.1f} ({v.min():.1f}–{v.max():.1f})" if len(v) > 1 else f"{v[0]:.1f}"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--root", default="runs/unclip_vs_glide")
  args = parser.parse_args()
  sides, minutes, clips = _rows(args.root), _minutes(args.root), _clip_rows(args.root)
  summary = {}
  header = "| side | seeds | train min (alone) | " + " | ".join(KEYS) + " |"
  lines = [header, "|" + "---|" * (len(KEYS) + 3)]
  for side in ("glide", "unclip", "unclip+upsampler"):
    runs = sides.get(side, {})
    if not runs:
      continue
    seeds = sorted(runs)
    stats = {k: [runs[s][k] for s in seeds] for k in KEYS}
    # Minutes of the runs that had the machine alone (times.tsv's plain stage names); shared runs are
    # logged as <stage>_shared and left out.
    mins = [m for m in (minutes["unclip" if side.startswith("unclip") else side][s] for s in seeds) if m]
    summary[side] = dict(seeds=seeds, train_minutes=mins, image_size=runs[seeds[0]]["image_size"],
                         per_seed={s: {k: runs[s][k] for k in KEYS} for s in seeds})

    lines.append(f"| {side} ({summary[side]['image_size']} px) | {','.join(map(str, seeds))} | "
                 f"{cell('m', mins) if mins else '–'} | "
                 + " | ".join(cell(k, stats[k]) for k in KEYS) + " |")
  if clips:
    seeds = sorted(clips)
    summary["clip"] = dict(seeds=seeds, per_seed={s: {k: clips[s][k] for k in CLIP_KEYS} for s in seeds})
    lines += ["", "| CLIP seeds | " + " | ".join(CLIP_KEYS) + " |", "|" + "---|" * (len(CLIP_KEYS) + 1),
              f"| {','.join(map(str, seeds))} | " + " | ".join(cell(k, [clips[s][k] for s in seeds])
                                                             for k in CLIP_KEYS) + " |"]
  here = os.path.dirname(os.path.abspath(__file__))
  with open(os.path.join(here, "metrics.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
