"""Evaluating a text-to-image U-Net on captioned shapes: prompts, samples, oracle readings, metrics.

The prompts are fixed by a seed and built from the dataset's structure, so every
run is measured on the same set:
- one-object prompts over the colour-shape pairs seen in training, every colour,
  shape, size and position in turn (each kind of attribute is named by every
  prompt: "a small red circle at the top left");
- one-object prompts with the held-out pairs (red triangle, blue circle), never
  seen in training: compositional generalisation;
- two-object prompts ("a large green star to the left of a small blue square"):
  binding of attributes to objects and the relation.

Each setting (sampler, steps, guidance scale) samples one image per prompt; the
shapes oracle reads them back and `caption_metrics` scores them. FID is taken on
the oracle's penultimate features against renders of the same prompts.
"""

import dataclasses
import itertools
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from t2i_jax.data import captions, shapes
from t2i_jax.diffusion import checks
from t2i_jax.eval import caption_metrics, fid as fid_lib, oracle as oracle_lib
from t2i_jax.pipelines import images as images_lib, stage as stage_lib, text_to_image
from t2i_jax.train import config_keys

_SEEN_PAIRS = [(c, s) for c in range(len(captions.COLORS)) for s in range(len(captions.SHAPES))
               if (captions.COLORS[c], captions.SHAPES[s]) not in shapes.HELDOUT_PAIRS]
_HELDOUT = [(captions.COLORS.index(c), captions.SHAPES.index(s)) for c, s in shapes.HELDOUT_PAIRS]


def _one_object(pairs, num: int, rng: np.random.Generator) -> List[captions.Scene]:
  # A shuffled walk through the full product, so small sets still cover every value of each attribute.
  product = [(c, s, z, p) for (c, s) in pairs for z in range(len(captions.SIZES))
             for p in range(len(captions.POSITIONS))]
  order = rng.permutation(len(product))
  picks = [product[i] for i in itertools.islice(itertools.cycle(order), num)]
  return [captions.Scene((captions.ObjectSpec(c, s, z, p),)) for c, s, z, p in picks]


def prompt_scenes(num_single: int, num_heldout: int, num_pair: int, seed: int = 0) -> List[captions.Scene]:
  """The evaluation prompts as scenes: one-object (seen pairs), one-object (held-out pairs), two-object."""
  rng = np.random.default_rng(seed)
  scenes = _one_object(_SEEN_PAIRS, num_single, rng) + _one_object(_HELDOUT, num_heldout, rng)
  for _ in range(num_pair):
    a, b = rng.choice(len(_SEEN_PAIRS), 2, replace=False)
    objects = tuple(captions.ObjectSpec(*_SEEN_PAIRS[i], int(rng.integers(len(captions.SIZES)))) for i in (a, b))
    scenes.append(captions.Scene(objects, int(rng.integers(len(captions.RELATIONS)))))
  return scenes


def prompts_for(scenes: Sequence[captions.Scene]) -> List[str]:
  """Canonical captions (first template and synonyms) of the scenes."""
  return [captions.caption_for(s) for s in scenes]


def reference_images(scenes: Sequence[captions.Scene], image_size: int, seed: int = 0) -> np.ndarray:
  """uint8 [N, S, S, 3]: a render of each prompt (layout jittered from `seed`), FID's reference set."""
  rng = np.random.default_rng(seed)
  return np.stack([shapes.render(s.objects, s.relation, image_size, rng) for s in scenes])


def sample_images(stage: stage_lib.Stage, prompts: Sequence[str], settings: text_to_image.SampleSettings,
                  batch_size: int):
  """(uint8 [N, H, W, 3], seconds per image) for the prompts, in batches of batch_size (the seed of batch
  i·batch_size is settings.seed + i·batch_size)."""
  out, start = [], time.perf_counter()
  for i in range(0, len(prompts), batch_size):
    chunk = list(prompts[i:i + batch_size])
    chunk += [chunk[-1]] * (batch_size - len(chunk))  # one compiled shape for every batch
    images = text_to_image.generate(stage, chunk, dataclasses.replace(settings, seed=settings.seed + i))
    out.append(images_lib.to_uint8(np.asarray(images)))
  images = np.concatenate(out)[:len(prompts)]
  return images, (time.perf_counter() - start) / len(prompts)


def score(images: np.ndarray, scenes: Sequence[captions.Scene], oracle,
          reference_features: np.ndarray) -> Dict[str, float]:
  """Caption metrics (seen / held-out / two-object) and oracle-feature FID of generated images.

  reference_features: oracle features [M, D] of the reference set (renders of the prompts).
  """
  module, params = oracle
  readings = oracle_lib.read(module, params, images)
  metrics = caption_metrics.compute_with_heldout(readings, scenes)
  features = oracle_lib.features(module, params, images)
  out = {
      # The headline numbers are over the seen pairs; held-out pairs are reported on their own.
      "color_accuracy": metrics["seen_color_accuracy"],
      "shape_accuracy": metrics["seen_shape_accuracy"],
      "size_accuracy": metrics["seen_size_accuracy"],
      "position_accuracy": metrics["seen_position_accuracy"],
      "caption_accuracy": metrics["seen_caption_accuracy"],
      "binding_accuracy": metrics["binding_accuracy"],
      "objects_accuracy": metrics["objects_accuracy"],
      "heldout_caption_accuracy": metrics["heldout_caption_accuracy"],
      "heldout_color_accuracy": metrics["heldout_color_accuracy"],
      "heldout_shape_accuracy": metrics["heldout_shape_accuracy"],
      "fid": fid_lib.fid_from_features(features, reference_features),
  }
  return out


def evaluate(stage: stage_lib.Stage, settings: Sequence[dict], *, num_single: int, num_heldout: int,
             num_pair: int, batch_size: int, seed: int = 0, oracle=None) -> List[dict]:
  """One row per setting dict(method, steps, guidance[, var_type]): the setting, its metrics, seconds_per_image.

  The sampler's eta and lowest timestep are the stage's (config.sample).
  """
  config = stage.config
  scenes = prompt_scenes(num_single, num_heldout, num_pair, seed)
  prompts = prompts_for(scenes)
  oracle = oracle or oracle_lib.load_oracle()
  # The reference set is the same for every setting: its features are computed once.
  reference_features = oracle_lib.features(*oracle, reference_images(scenes, stage.model.image_size, seed))
  rows = []
  for setting in settings:
    sampler = text_to_image.SampleSettings.from_config(config.sample, seed=seed, **setting)
    images, seconds = sample_images(stage, prompts, sampler, batch_size)
    if setting["method"] == "ddpm":  # the only sampler that uses the variance
      setting = dict(setting, var_type=sampler.var_type or config.diffusion.var_type)
    rows.append(dict(setting, **score(images, scenes, oracle, reference_features),
                     min_timestep=sampler.min_timestep, seconds_per_image=seconds, num_prompts=len(prompts)))
  return rows


COLUMNS = ("method", "steps", "guidance", "var_type", "min_timestep", "color_accuracy", "shape_accuracy",
           "size_accuracy", "position_accuracy", "caption_accuracy", "binding_accuracy", "heldout_caption_accuracy",
           "fid", "seconds_per_image")


def format_table(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
  """A Markdown table of evaluation rows (accuracies in percent)."""
  def cell(key, value):
    if isinstance(value, float) and key.endswith("accuracy"):
      return f"{100 * value:.1f}"
    if isinstance(value, float):
      return f"{value:.3g}"
    return str(value)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(c, row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def parse_setting(text: str) -> dict:
  """"dpm++2m:20:3" -> dict(method="dpm++2m", steps=20, guidance=3.0); an optional fourth field sets the
  ancestral sampler's variance: "ddpm:50:3:fixed_large" (default: the training config's var_type)."""
  parts = text.split(":")
  if len(parts) not in (3, 4):
    raise ValueError(f"eval setting {text!r} must read METHOD:STEPS:GUIDANCE[:VAR_TYPE], e.g. 'dpm++2m:20:3' or "
                     "'ddpm:50:3:fixed_large'.")
  try:
    setting = dict(method=parts[0], steps=int(parts[1]), guidance=float(parts[2]))
  except ValueError:
    raise ValueError(f"eval setting {text!r}: STEPS must be an integer and GUIDANCE a number.") from None
  if len(parts) == 4:
    if parts[3] not in checks.VAR_TYPES:
      raise ValueError(f"eval setting {text!r}: VAR_TYPE must be one of {checks.VAR_TYPES}.")
    setting["var_type"] = parts[3]
  return setting


def run(config, workdir: str, settings: Sequence[str] = (), step: Optional[int] = None) -> Tuple[List[dict], str]:
  """--mode=eval: scores the workdir's latest (EMA) checkpoint, or the saved `step`.

  settings: "METHOD:STEPS:GUIDANCE" strings (default config.eval.settings); the
  first is the headline, whose metrics are metrics.json's top-level keys. Writes
  metrics.json and eval_table.md in the workdir (metrics_step<N>.json and
  eval_table_step<N>.md for an earlier `step`, so the latest's are kept).

  Returns:
    (rows, path of the metrics file written).
  """
  if config.model.name != "unet" or config.model.get("text") is None:
    raise ValueError("--mode=eval scores a text-conditional U-Net trained on captioned shapes; "
                     f"this config has model.name={config.model.name!r}.")
  if config.model.get("super_res"):
    raise ValueError("--mode=eval scores a base text U-Net; a super-resolution U-Net needs low-resolution "
                     "inputs, so score it in a cascade (issue 24), or its bits/dim with eval.bits_per_dim.")
  config = config_keys.complete(config)
  evaluation = config.eval if config.get("eval") is not None else config_keys.section("eval")
  settings = [parse_setting(s) for s in (settings or evaluation.settings)]
  for setting in settings:  # every setting is checked before the checkpoint is read
    text_to_image.SampleSettings.from_config(config.sample, **setting)
  stage = stage_lib.load_stage(workdir, config, step=step)
  rows = evaluate(stage, settings, num_single=evaluation.num_single, num_heldout=evaluation.num_heldout,
                  num_pair=evaluation.num_pair, batch_size=evaluation.batch_size, seed=evaluation.seed)
  got = stage.step
  suffix = "" if step is None else f"_step{got}"
  path = os.path.join(workdir, f"metrics{suffix}.json")
  with open(path, "w") as f:
    json.dump(dict(rows[0], step=got, settings=rows), f, indent=2)
  with open(os.path.join(workdir, f"eval_table{suffix}.md"), "w") as f:
    f.write(format_table(rows) + "\n")
  return rows, path
