"""How far one training run drifts when only the floating-point path changes (issue 23's fragility).

Trains `configs/shapes_full.py` for --steps steps several times from one seed, changing only how XLA
computes (the convolutions' library, the number of devices the batch is split over), and once from
another seed; then, at every checkpoint, compares each run with the reference run:

- `param_rel`: ||θ_run − θ_ref|| / ||θ_ref||, the raw (not EMA) params;
- `x0_rel` at t: the RMS difference of the two runs' x0 predictions on the same noised test scenes
  (one- and two-object, the attribute probe's), over the RMS of the reference's x0 error there.

A path change the size of one rounding error that grows to the size of a seed change is a new seed: a
recipe whose outcome moves with the seed moves with the machine.

  PYTHONPATH=. .venv/bin/python experiments/shapes_full/divergence.py --root=runs/divergence --steps=600
"""

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import captions, shapes
from t2i_jax.diffusion import gaussian
from t2i_jax.eval import attribute_probe
from t2i_jax.pipelines import stage as stage_lib

# name -> (extra XLA flags, seed). "reference" is the machine's default path; each other run differs
# from it in one thing.
RUNS = {
    "reference": ("", 0),
    "eigen_convs": ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution", 0),
    "two_devices": ("--xla_force_host_platform_device_count=2", 0),
    "seed1": ("", 1),
}
TIMESTEPS = (500, 850)


def train(root: str, name: str, steps: int, every: int) -> None:
  flags, seed = RUNS[name]
  workdir = os.path.join(root, name)
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
  subprocess.run([sys.executable, "-m", "t2i_jax.main", "--config=configs/shapes_full.py", f"--workdir={workdir}",
                  f"--config.seed={seed}", f"--config.train.num_steps={steps}",
                  f"--config.train.checkpoint_every={every}", f"--config.train.log_every={every}",
                  f"--config.train.max_to_keep={steps // every + 1}"], env=env, check=True)


def scenes_x0(size: int, num: int = 48):
  """Renders [2·num, size, size, 3] in [-1, 1] of one- and two-object test scenes, and their captions."""
  scenes = attribute_probe.probe_scenes(num) + attribute_probe.pair_probe_scenes(num)
  x0 = np.stack([shapes.render(s.objects, s.relation, size) for s in scenes])
  return jnp.asarray(shapes.to_float(x0)), [captions.caption_for(s) for s in scenes]


def compare(root: str, steps: int, every: int) -> list:
  rows = []
  for step in range(every, steps + 1, every):
    stages = {name: stage_lib.load_stage(os.path.join(root, name), step=step, use_ema=False) for name in RUNS}
    ref = stages["reference"]
    x0, prompts = scenes_x0(ref.config.model.image_size)
    predictors = attribute_probe.model_predictors(ref, [s.params for s in stages.values()], ref.schedule)
    predictions = {}
    for t_value in TIMESTEPS:
      t = jnp.full((x0.shape[0],), t_value, jnp.int32)
      noise = jax.random.normal(jax.random.PRNGKey(t_value), x0.shape)
      x_t = gaussian.q_sample(ref.schedule, x0, t, noise)
      predictions[t_value] = {name: predict(x_t, t, prompts) for name, predict in zip(stages, predictors)}
    ref_flat = np.concatenate([np.ravel(np.asarray(p)) for p in jax.tree.leaves(ref.params)])
    for name, stage in stages.items():
      if name == "reference":
        continue
      flat = np.concatenate([np.ravel(np.asarray(p)) for p in jax.tree.leaves(stage.params)])
      row = dict(step=step, run=name, param_rel=float(np.linalg.norm(flat - ref_flat) / np.linalg.norm(ref_flat)))
      for t_value, by_run in predictions.items():
        error = float(jnp.sqrt(jnp.mean((by_run["reference"] - x0) ** 2)))
        row[f"x0_rel_t{t_value}"] = float(jnp.sqrt(jnp.mean((by_run[name] - by_run["reference"]) ** 2))) / error
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="runs/divergence")
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--every", type=int, default=100)
  parser.add_argument("--compare_only", action="store_true", help="the runs exist: only compare them")
  args = parser.parse_args()
  if not args.compare_only:
    for name in RUNS:
      train(args.root, name, args.steps, args.every)
  rows = compare(args.root, args.steps, args.every)
  with open(os.path.join(args.root, "divergence.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
  main()
