"""The README's table: each (guidance, scale) row of run.py's metrics as the mean (min–max) over training seeds.

  .venv/bin/python experiments/glide_guidance/summarize.py experiments/glide_guidance/metrics_s*.json
"""

import json
import sys

# (column, metrics key, scale); diversity is the samples' spread over the renders'.
COLUMNS = (("caption", "caption_accuracy", 100), ("binding", "binding_accuracy", 100),
           ("held-out caption", "heldout_caption_accuracy", 100), ("shape", "shape_accuracy", 100),
           ("CLIP score", "clip_score", 1), ("FID", "fid", 1), ("diversity / renders'", None, 1))


def _value(row, key, scale):
  return row["diversity"] / row["render_diversity"] if key is None else row[key] * scale


def _cell(values, digits):
  mean = sum(values) / len(values)
  if len(values) == 1:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(paths):
  runs = [json.load(open(p)) for p in paths]
  print("| guidance | scale | " + " | ".join(c for c, _, _ in COLUMNS) + " |")
  print("|---|---|" + "---|" * len(COLUMNS))
  for first in runs[0]["rows"]:
    key = (first["kind"], first["scale"])
    rows = [next(r for r in run["rows"] if (r["kind"], r["scale"]) == key) for run in runs]
    cells = [_cell([_value(r, k, s) for r in rows], 0 if k == "fid" else 2 if k is None else 1) for _, k, s in COLUMNS]
    print(f"| {key[0]} | {key[1]:g} | " + " | ".join(cells) + " |")
  print(f"\n{len(runs)} seeds: " + ", ".join(r["base"] for r in runs))


if __name__ == "__main__":
  main(sys.argv[1:])
