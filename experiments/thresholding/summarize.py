"""The thresholding table: per (threshold, guidance scale), the mean (range) over seeds of caption accuracy, FID
and foreground saturation, from run.py's metrics_s*.json.

  python experiments/thresholding/summarize.py experiments/thresholding/metrics_s*.json
"""

import json
import sys

import numpy as np


def cell(values, scale=1.0, fmt="{:.1f}"):
  values = [scale * v for v in values]
  mean = fmt.format(np.mean(values))
  return mean if len(values) == 1 else f"{mean} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main(paths):
  runs = [json.load(open(p))["rows"] for p in paths]
  render = np.mean([row["render_saturation"] for rows in runs for row in rows])
  print(f"{len(runs)} seed(s); renders' foreground saturation {render:.3f}\n")
  print("| threshold | w | caption accuracy | FID | saturation |")
  print("|---|---|---|---|---|")
  for i, row in enumerate(runs[0]):
    same = [rows[i] for rows in runs]
    print(f"| {row['threshold']} | {row['guidance']:g} | {cell([r['caption_accuracy'] for r in same], 100)} | "
          f"{cell([r['fid'] for r in same], fmt='{:.0f}')} | {cell([r['saturation'] for r in same], fmt='{:.3f}')} |")


if __name__ == "__main__":
  main(sys.argv[1:])
