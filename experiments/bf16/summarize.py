"""The bf16 experiment's table: per 50-step window, the float32 seeds' mean loss and range, and bfloat16's.

  python experiments/bf16/summarize.py runs/bf16
"""

import json
import os
import sys

import numpy as np

WINDOW = 50


def curve(workdir):
  """Mean loss per WINDOW-step window, from the run's metrics.jsonl (logged every 10 steps)."""
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = np.array([m["step"] for m in lines])
  loss = np.array([m["loss"] for m in lines])
  return np.array([loss[(steps > lo) & (steps <= lo + WINDOW)].mean() for lo in range(0, steps.max(), WINDOW)])


def main(root):
  runs = {dtype: np.stack([curve(os.path.join(root, f"{dtype}_s{seed}")) for seed in range(3)])
          for dtype in ("float32", "bfloat16")}
  f32, bf16 = runs["float32"], runs["bfloat16"]
  print("| steps | float32: mean (range), 3 seeds | bfloat16: mean (range), 3 seeds | bf16 mean inside f32 range |")
  print("|---|---|---|---|")
  inside = 0
  for i in range(f32.shape[1]):
    ok = f32[:, i].min() <= bf16[:, i].mean() <= f32[:, i].max()
    inside += ok
    print(f"| {i * WINDOW + 1}–{(i + 1) * WINDOW} | {f32[:, i].mean():.4f} ({f32[:, i].min():.4f}–{f32[:, i].max():.4f}) "
          f"| {bf16[:, i].mean():.4f} ({bf16[:, i].min():.4f}–{bf16[:, i].max():.4f}) | {'yes' if ok else 'no'} |")
  gap = np.abs(bf16.mean(0) - f32.mean(0))
  spread = f32.max(0) - f32.min(0)
  print(f"\nbf16's mean inside float32's seed range in {inside} of {f32.shape[1]} windows; |mean gap| / f32 range: "
        f"median {np.median(gap / spread):.2f}, max {np.max(gap / spread):.2f}")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "runs/bf16")
