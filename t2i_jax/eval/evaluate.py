"""Evaluating a text-to-image U-Net on captioned shapes: prompts, samples, oracle readings, metrics (an
autoencoder's reconstructions: eval/reconstruction.py).

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
import functools
import itertools
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from t2i_jax import config_keys
from t2i_jax.data import captions, shapes
from t2i_jax.eval import caption_metrics, clip_eval, fid as fid_lib, oracle as oracle_lib, reconstruction
from t2i_jax.pipelines import chains, images as images_lib, stage as stage_lib, text_to_image
from t2i_jax.train import families

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


def sample_in_batches(sample_fn, prompts: Sequence[str], seed: int, batch_size: int):
  """({output: uint8 [N, H, W, 3]}, seconds per image) from sample_fn(prompts, seed) -> {output: images in
  [-1, 1]}, run in batches of batch_size (the seed of batch i·batch_size is seed + i·batch_size)."""
  out, start = {}, time.perf_counter()
  for i in range(0, len(prompts), batch_size):
    chunk = list(prompts[i:i + batch_size])
    chunk += [chunk[-1]] * (batch_size - len(chunk))  # one compiled shape for every batch
    for name, images in sample_fn(chunk, seed + i).items():
      out.setdefault(name, []).append(images_lib.to_uint8(np.asarray(images)))
  images = {name: np.concatenate(parts)[:len(prompts)] for name, parts in out.items()}
  return images, (time.perf_counter() - start) / len(prompts)


def sample_images(stage: stage_lib.Stage, prompts: Sequence[str], settings: text_to_image.SampleSettings,
                  batch_size: int):
  """(uint8 [N, H, W, 3], seconds per image) of a text U-Net stage for the prompts (sample_in_batches)."""
  images, seconds = sample_in_batches(
      lambda chunk, seed: {"": text_to_image.generate(stage, chunk, dataclasses.replace(settings, seed=seed))},
      prompts, settings.seed, batch_size)
  return images[""], seconds


def diversity(features: np.ndarray, group: int, keep: Optional[np.ndarray] = None) -> float:
  """Mean pairwise L2 distance between the features [P·group, D] of samples of one prompt (rows
  p·group … p·group + group − 1 share prompt p), averaged over the P prompts.

  keep: optional bool [P·group]; only the kept samples' pairs count (e.g. those that show their caption,
  so that errors do not pass as diversity), and prompts with fewer than two kept samples are left out
  (NaN if none has two).
  """
  feats = np.asarray(features, np.float64).reshape(-1, group, features.shape[-1])
  distances = np.linalg.norm(feats[:, :, None] - feats[:, None], axis=-1)
  keep = np.ones(feats.shape[:2], bool) if keep is None else np.asarray(keep, bool).reshape(feats.shape[:2])
  pairs = keep[:, :, None] & keep[:, None, :] & ~np.eye(group, dtype=bool)
  counted = pairs.sum(axis=(1, 2)) > 0
  if not counted.any():
    return float("nan")
  return float(np.mean((distances * pairs).sum(axis=(1, 2))[counted] / pairs.sum(axis=(1, 2))[counted]))


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


class _References:
  """The oracle features of renders of the prompts (FID's reference set) and the render diversity, per
  image size, computed once for every setting."""

  def __init__(self, oracle, scenes, diverse_scenes, group: int, seed: int):
    self.oracle, self.scenes, self.diverse, self.group, self.seed = oracle, scenes, diverse_scenes, group, seed
    self._cache = {}

  def __call__(self, size: int):
    if size not in self._cache:
      features = oracle_lib.features(*self.oracle, reference_images(self.scenes, size, self.seed))
      # Renders of one prompt differ only in their jittered layout: the diversity the data itself has.
      spread = None
      if self.diverse:
        renders = reference_images(self.diverse, size, self.seed + 1)
        spread = diversity(oracle_lib.features(*self.oracle, renders), self.group)
      self._cache[size] = features, spread
    return self._cache[size]


def evaluate_fn(sample_fn, settings: Sequence[dict], evaluation, oracle=None) -> List[dict]:
  """Rows of metrics for any text-to-image sampler: one per (setting, output).

  sample_fn(setting, prompts, seed) -> {output name: images [N, H, W, 3] in [-1, 1]} (a U-Net has one
  output, ""; the unCLIP chain "decoder" and "upsampler"). evaluation: the eval section (prompt counts,
  batch_size, seed, num_diverse prompts sampled diverse_samples times each for the diversity figures:
  `diversity` over all those samples, `correct_diversity` over those that show their caption, which
  make up `diverse_correct` of them).
  """
  seed = evaluation.seed
  scenes = prompt_scenes(evaluation.num_single, evaluation.num_heldout, evaluation.num_pair, seed)
  prompts = prompts_for(scenes)
  group = evaluation.diverse_samples
  diverse = [s for s in scenes[:evaluation.num_diverse] for _ in range(group)]
  oracle = oracle or oracle_lib.load_oracle()
  references = _References(oracle, scenes, diverse, group, seed)
  rows = []
  for setting in settings:
    run = functools.partial(sample_fn, setting)
    images, seconds = sample_in_batches(run, prompts, seed, evaluation.batch_size)
    # num_diverse = 0 leaves the diversity figures out (a sampler sweep that reads caption accuracy and FID).
    spread = sample_in_batches(run, prompts_for(diverse), seed + len(prompts), evaluation.batch_size)[0] if diverse \
        else None
    for name, outputs in images.items():
      features, render_diversity = references(outputs.shape[1])
      row = dict(setting, **({"output": name} if name else {}), **score(outputs, scenes, oracle, features))
      if spread is not None:
        spread_features = oracle_lib.features(*oracle, spread[name])
        right = caption_metrics.caption_hits(oracle_lib.read(*oracle, spread[name]), diverse)
        row.update(diversity=diversity(spread_features, group),
                   correct_diversity=diversity(spread_features, group, keep=right),
                   diverse_correct=float(np.mean(right)), render_diversity=render_diversity)
      row.update(image_size=int(outputs.shape[1]), seconds_per_image=seconds, num_prompts=len(prompts))
      rows.append(row)
  return rows


def evaluate(stage: stage_lib.Stage, settings: Sequence[dict], evaluation, oracle=None) -> List[dict]:
  """One row per setting dict(method, steps, guidance[, var_type]) of a text U-Net stage: the setting, its
  metrics, seconds_per_image. The sampler's eta and lowest timestep are the stage's (config.sample)."""
  config = stage.config

  def sampler(setting, seed=0):
    return text_to_image.SampleSettings.from_config(config.sample, seed=seed, **setting)

  rows = evaluate_fn(lambda setting, prompts, seed: {"": text_to_image.generate(stage, prompts,
                                                                               sampler(setting, seed))},
                     settings, evaluation, oracle)
  for row, setting in zip(rows, settings):
    row["min_timestep"] = sampler(setting).min_timestep
    if setting["method"] == "ddpm":  # the only sampler that uses the variance
      row["var_type"] = sampler(setting).var_type or config.diffusion.var_type
  return rows


COLUMNS = ("method", "steps", "guidance", "var_type", "churn", "min_timestep", "color_accuracy", "shape_accuracy",
           "size_accuracy", "position_accuracy", "caption_accuracy", "binding_accuracy", "heldout_caption_accuracy",
           "fid", "diversity", "correct_diversity", "seconds_per_image")
CHAIN_COLUMNS = ("output", "image_size", "method", "steps", "guidance", "color_accuracy", "shape_accuracy",
                 "size_accuracy", "position_accuracy", "caption_accuracy", "binding_accuracy",
                 "heldout_caption_accuracy", "fid", "diversity", "correct_diversity", "render_diversity",
                 "seconds_per_image")


def format_table(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
  """A Markdown table of evaluation rows (accuracies in percent)."""
  def cell(key, value):
    if isinstance(value, float) and key.endswith(("accuracy", "_r1")):
      return f"{100 * value:.1f}"
    if isinstance(value, float):
      return f"{value:.3g}"
    return str(value)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(c, row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


# "METHOD:STEPS:GUIDANCE[:VAR_TYPE][:start=T][:churn=S]" strings, parsed where the pipelines read them too.
parse_setting = text_to_image.parse_setting


def run(config, workdir: str, settings: Sequence[str] = (), step: Optional[int] = None) -> Tuple[List[dict], str]:
  """--mode=eval on a stage's workdir: scores its latest (EMA) checkpoint, or the saved `step`, as its model
  family says (SCORERS[family.evaluation]: a text U-Net's samples, an autoencoder's reconstructions, a
  CLIP's zero-shot ranking).

  settings: "METHOD:STEPS:GUIDANCE" strings (default config.eval.settings) of a
  text U-Net; the first is the headline, whose metrics are metrics.json's top-level
  keys. Writes metrics.json and eval_table.md in the workdir (metrics_step<N>.json and
  eval_table_step<N>.md for an earlier `step`, so the latest's are kept).

  Returns:
    (rows, path of the metrics file written).
  """
  family = families.of(config)
  family.check_eval(config)
  return SCORERS[family.evaluation](config_keys.complete(config), workdir, settings, step)


def _run_samples(config, workdir: str, settings: Sequence[str], step: Optional[int]):
  """run() for a text U-Net: its samples of the prompt set, read by the oracle (`evaluate`)."""
  evaluation = config_keys.section_of(config, "eval")
  settings = [parse_setting(s) for s in (settings or evaluation.settings)]
  for setting in settings:  # every setting is checked before the checkpoint is read
    text_to_image.SampleSettings.from_config(config.sample, **setting)
  stage = stage_lib.load_stage(workdir, config, step=step)
  rows = evaluate(stage, settings, evaluation)
  got = stage.step
  suffix = "" if step is None else f"_step{got}"
  return rows, _write(workdir, suffix, dict(rows[0], step=got, settings=rows), format_table(rows))


def _run_autoencoder(config, workdir: str, settings: Sequence[str], step: Optional[int]):
  """run() for latent diffusion's first stage: reconstructions of as many test renders as the text-to-image
  eval has prompts (eval.reconstruction)."""
  if settings:
    raise ValueError("an autoencoder is evaluated on its reconstructions; it takes no --eval_setting.")
  evaluation = config_keys.section_of(config, "eval")
  stage = stage_lib.load_stage(workdir, config, step=step)
  num = evaluation.num_single + evaluation.num_heldout + evaluation.num_pair
  row = dict(reconstruction.evaluate(stage, num, evaluation.seed), step=stage.step)
  suffix = "" if step is None else f"_step{stage.step}"
  return [row], _write(workdir, suffix, row, format_table([row], reconstruction.COLUMNS))


def _run_clip(config, workdir: str, settings: Sequence[str], step: Optional[int]):
  """run() for a CLIP: zero-shot accuracy per attribute and retrieval R@1 on the test split of the captioned
  shapes it was trained on, and the held-out pairs (eval.clip_eval), as many images per split as the
  dataset's test split holds."""
  if settings:
    raise ValueError("a CLIP is evaluated by ranking captions; it takes no --eval_setting.")
  if config.data.name not in ("shapes", "shapes_rendered"):
    raise ValueError(f"--mode=eval on a CLIP reads captioned shapes; this one trained on data.name="
                     f"{config.data.name!r}.")
  stage = stage_lib.load_stage(workdir, config, step=step)
  embed_images, embed_texts = clip_eval.stage_embedders(stage)
  row = dict(clip_eval.evaluate(embed_images, embed_texts, config.model.image_size, config.data.seed,
                                config.data.num_test, config_keys.section_of(config, "eval").seed), step=stage.step)
  suffix = "" if step is None else f"_step{stage.step}"
  return [row], _write(workdir, suffix, row, format_table([row], clip_eval.COLUMNS))


SCORERS = {"samples": _run_samples, "reconstructions": _run_autoencoder, "ranking": _run_clip}
_TABLES = {"samples": COLUMNS, "reconstructions": reconstruction.COLUMNS, "ranking": clip_eval.COLUMNS}


def columns_for(config) -> Sequence[str]:
  """The table columns of run()'s rows for this config."""
  return _TABLES[families.of(config).evaluation]


def _write(workdir: str, suffix: str, metrics: dict, table: str) -> str:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f"metrics{suffix}.json")
  with open(path, "w") as f:
    json.dump(metrics, f, indent=2)
  with open(os.path.join(workdir, f"eval_table{suffix}.md"), "w") as f:
    f.write(table + "\n")
  return path


def run_chain(config, workdir: str, settings: Sequence[str] = ()) -> Tuple[List[dict], str]:
  """--mode=eval on a chain config (pipelines.chains): the metrics of each of the chain's outputs — unCLIP's
  decoder and upsampler, GLIDE's base and upsampler, latent diffusion's decoded image — at its own
  resolution, for each setting of the first image stage (default config.eval.settings), the other stages
  sampling as the chain config says. Writes metrics.json and eval_table.md into workdir."""
  chain = chains.of(config)
  if chain is None:
    raise ValueError("this is not a chain config (it has none of the sections "
                     f"{', '.join(chains.CHAINS)}); see configs/shapes_unclip.py.")
  config = config_keys.complete(config)
  section, evaluation = config[chain.section], config_keys.section_of(config, "eval")
  settings = [chain.parse_setting(s) for s in (settings or evaluation.settings)]
  stages = chain.load(section)
  by_setting = {str(s): chain.settings(section, stages, 0, s) for s in settings}

  def sample_fn(setting, prompts, seed):
    result = chain.generate(stages, prompts, by_setting[str(setting)].reseeded(seed))
    return {name: result[name] for name in chain.outputs if name in result}

  rows = evaluate_fn(sample_fn, settings, evaluation)
  loaded = {name: dict(workdir=stage.workdir, step=stage.step) for name, stage in vars(stages).items()
            if isinstance(stage, stage_lib.Stage)}
  metrics = dict(rows[-1], stages=loaded, **{key: section[key] for key in chain.recorded}, settings=rows)
  return rows, _write(workdir, "", metrics, format_table(rows, CHAIN_COLUMNS))
