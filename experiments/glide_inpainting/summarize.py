"""The README's table: each row of run.py's metrics as the mean (min–max) over training seeds, in percent.

  .venv/bin/python experiments/glide_inpainting/summarize.py experiments/glide_inpainting/metrics_s*.json
"""

import json
import math
import sys

METRICS = ("two_objects", "new_object", "new_color", "new_shape", "kept_object", "relation")


def _cell(values, scale=100.0, digits=1):
  values = [v * scale for v in values]
  mean = sum(values) / len(values)
  if len(values) == 1 or max(values) - min(values) < 10 ** -digits:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(paths):
  runs = [json.load(open(p)) for p in paths]
  keys = [(r["row"], r["sampler"]) for r in runs[0]["rows"]]
  print(f"| method | sampler | {' | '.join(METRICS)} | PSNR unmasked (dB) |")
  print("|---|---|" + "---|" * (len(METRICS) + 1))
  for key in keys:
    rows = [next(r for r in run["rows"] if (r["row"], r["sampler"]) == key) for run in runs]
    psnr = [r["psnr_unmasked"] for r in rows]
    psnr_cell = "exact" if all(math.isinf(v) for v in psnr) else _cell(psnr, scale=1.0)
    cells = [_cell([r[m] for r in rows]) for m in METRICS]
    print(f"| {key[0]} | {key[1] or '–'} | {' | '.join(cells)} | {psnr_cell} |")
  print(f"\n{len(runs)} seeds: " + ", ".join(f"{r['inpaint']} (step {r['inpaint_step']})" for r in runs))


if __name__ == "__main__":
  main(sys.argv[1:])
