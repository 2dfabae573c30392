"""Does the model's x0 estimate at the noisiest levels know which side each object goes?

At t near T the image is almost pure noise, so the best x0 estimate is the mean image of the caption,
E[x0 | caption]. For a two-object caption it is estimated here from 64 layouts of the scene
(side-aware mean), and the mean a model that ignores the relation's direction would reach is the
average of the scene's and its mirror's (side-blind mean). The script prints, per scene and averaged:
the squared error of both means against the renders (the two optima), the model's error, and how far
the model's own mean prediction lies from each. Near the side-blind mean and far from the side-aware
one: the model has settled where word order and the relation's direction do not matter.

  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_optimum.py runs/full13 16000
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import captions, shapes
from t2i_jax.diffusion import gaussian
from t2i_jax.eval import attribute_probe
from t2i_jax.pipelines import stage as stage_lib

NUM_SCENES, NUM_LAYOUTS, TIMESTEPS = 8, 64, (990, 950)


def layouts(objects, relation: int, image_size: int, seed: int) -> np.ndarray:
  """NUM_LAYOUTS renders of the scene, float [N, H, W, 3], each with its own layout draw."""
  return np.stack([shapes.to_float(shapes.render(objects, relation, image_size, rng=np.random.default_rng([seed, j])))
                   for j in range(NUM_LAYOUTS)])


def main(workdir: str, step: int) -> None:
  stage = stage_lib.load_stage(workdir, step=step, use_ema=True)
  config = stage.config
  schedule = stage.schedule
  predict, = attribute_probe.model_predictors(stage, [stage.params], schedule)
  size = config.model.image_size
  print(f"{workdir} step {step} (EMA): x0 squared error at t = {TIMESTEPS}, {NUM_LAYOUTS} layouts per scene")
  print("| caption | side-aware optimum | side-blind optimum | " + " | ".join(
      f"t={t}: model, model mean - aware, model mean - blind" for t in TIMESTEPS) + " |")
  rows = []
  for k, scene in enumerate(attribute_probe.pair_probe_scenes(NUM_SCENES)):
    objects = tuple(dataclasses.replace(o, center=None) for o in scene.objects)
    x0 = layouts(objects, scene.relation, size, k)
    aware = x0.mean(0)
    blind = 0.5 * (aware + layouts(objects, scene.relation ^ 1, size, k).mean(0))
    row = [np.mean((x0 - aware) ** 2), np.mean((x0 - blind) ** 2)]
    caption = captions.caption_for(captions.Scene(objects, scene.relation))
    for t_value in TIMESTEPS:
      t = jnp.full((NUM_LAYOUTS,), t_value, jnp.int32)
      x_t = gaussian.q_sample(schedule, jnp.asarray(x0), t, jax.random.normal(jax.random.PRNGKey(k), x0.shape))
      pred = np.asarray(predict(x_t, t, [caption] * NUM_LAYOUTS))
      row += [np.mean((pred - x0) ** 2), np.mean((pred.mean(0) - aware) ** 2), np.mean((pred.mean(0) - blind) ** 2)]
    rows.append(row)
    print(f"| {caption} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
  print("| mean | " + " | ".join(f"{v:.4f}" for v in np.mean(rows, 0)) + " |")


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
