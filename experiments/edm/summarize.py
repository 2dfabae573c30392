"""Tables of experiments/edm from the runs' metrics files (mean and range over training seeds).

  python experiments/edm/summarize.py --default runs/unclip_vs_glide/glide_s{0,1,2} --edm runs/edm/edm_pm04_s{0,1,2}
"""

import argparse
import json
import os

import numpy as np


def _rows(workdir, name):
  path = os.path.join(workdir, name)
  return json.load(open(path))["settings"] if os.path.exists(path) else []


def _nfe(row):
  return 2 * row["steps"] - 1 if row["method"] == "heun" else row["steps"]


def _cell(values, percent=True):
  values = np.asarray(values, float)
  scale = 100 if percent else 1
  fmt = "{:.1f}" if percent else "{:.0f}"
  if len(values) == 1:
    return fmt.format(scale * values[0])
  return f"{fmt.format(scale * values.mean())} ({fmt.format(scale * values.min())}–{fmt.format(scale * values.max())})"


def headline(models):
  print("| model | setting (NFE) | caption | held-out | binding | FID | diversity |\n|---|---|---|---|---|---|---|")
  for label, (dirs, name) in models.items():
    per_seed = [_rows(d, name) for d in dirs]
    for i, row in enumerate(per_seed[0]):
      rows = [p[i] for p in per_seed if len(p) > i]
      print(f"| {label} | {row['method']}:{row['steps']}:{row['guidance']:g} ({_nfe(row)}) | "
            f"{_cell([r['caption_accuracy'] for r in rows])} | {_cell([r['heldout_caption_accuracy'] for r in rows])} | "
            f"{_cell([r['binding_accuracy'] for r in rows])} | {_cell([r['fid'] for r in rows], False)} | "
            f"{_cell([r['diversity'] for r in rows], False)} |")


def sweep(models):
  print("| model | sampler | NFE | caption | FID |\n|---|---|---|---|---|")
  for label, dirs in models.items():
    per_seed = [{(r["method"], r["steps"], r.get("churn")): r
                 for r in _rows(d, "metrics_sweep.json") + _rows(d, "metrics_churn.json")} for d in dirs]
    for key in sorted(per_seed[0], key=lambda k: (k[0], k[2] or 0, k[1])):
      rows = [p[key] for p in per_seed if key in p]
      churn = f" churn {key[2]:g}" if key[2] else ""
      print(f"| {label} | {key[0]}{churn} | {_nfe(rows[0])} | {_cell([r['caption_accuracy'] for r in rows])} | "
            f"{_cell([r['fid'] for r in rows], False)} |")


def posthoc(workdir):
  print("| σ_rel | caption | FID |\n|---|---|---|")
  folder = os.path.join(workdir, "posthoc_ema")
  for name in sorted(n for n in os.listdir(folder) if n.startswith("sigma_rel_")):
    (row,) = _rows(os.path.join(folder, name), "metrics.json")
    print(f"| {name[len('sigma_rel_'):]} | {100 * row['caption_accuracy']:.1f} | {row['fid']:.0f} |")


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--default", nargs="+", required=True)
  parser.add_argument("--edm", nargs="+", required=True)
  args = parser.parse_args()
  headline({"default (v, logit-normal t)": (args.default, "metrics_headline.json"),
            "EDM": (args.edm, "metrics_headline.json")})
  print()
  sweep({"default": args.default, "EDM": args.edm})
  print()
  posthoc(args.edm[0])
