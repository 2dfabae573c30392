"""Sampling from a training workdir: restore the latest checkpoint's EMA params, generate, write PNGs."""

import os
import re
from typing import Optional, Sequence

import numpy as np

from t2i_jax.data import input_pipeline, tokenizer as tokenizer_lib
from t2i_jax.models import classifier as classifier_lib
from t2i_jax.pipelines import images as images_lib, text_to_image
from t2i_jax.train import checkpoint, tasks


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def conditions(model, config, num: int, prompts: Optional[Sequence[str]] = None, tokenizer=None):
  """(cond, captions): the U-Net's conditioning for `num` samples and a caption for each grid cell.

  text U-Net: the prompts; class-conditional: config.sample.labels (default
  0, 1, 2, ...); super-resolution: the first `num` images of the data's test
  split, downsampled, with their captions as prompts; unconditional: {}.
  """
  cond, captions = {}, [""] * num
  if model.super_res:
    source = input_pipeline.make_source(config.data, config.sample.get("split", "test"))
    batch = next(input_pipeline.create_iterator(
        source, batch_size=num, seed=0, shuffle=False, num_epochs=1, num_threads=0,
        image_size=config.data.image_size))
    cond["low_res"] = images_lib.downsample(batch["image"], tasks.LOW_RES_FACTOR)
    captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in batch.get("caption", captions)]
    prompts = captions if model.text is not None else None
  if model.text is not None:
    if not prompts:
      raise ValueError("a text-conditional model needs prompts: pass --prompt or set config.sample.prompts.")
    if tokenizer is None:
      tokenizer = tokenizer_lib.load_tokenizer(config.data.tokenizer)
    cond = text_to_image.text_cond(prompts, tokenizer, config.data.context_length, cond)
    captions = list(prompts)
  elif model.num_classes is not None:
    labels = list(config.sample.get("labels", None) or range(num))[:num]
    cond["y"] = np.asarray(labels, np.int32) % model.num_classes
    captions = [f"class {y}" for y in cond["y"]]
  return cond, captions


def classifier_guidance(config):
  """The grad_fn of config.sample.classifier_workdir's noisy classifier at config.sample.classifier_scale, or None.

  Guided diffusion's recipe: a class-conditional (or unconditional) U-Net sampled
  with s·∇ log p(y | x_t) from a separately trained classifier
  (configs/adm_imagenet64.py:classifier) added to each step's mean.
  """
  workdir = config.sample.get("classifier_workdir")
  if not workdir:
    return None
  classifier, params, _ = tasks.load_frozen(workdir)
  if classifier.image_size != config.model.image_size:
    raise ValueError(f"the classifier in {workdir} reads {classifier.image_size}px images but the U-Net makes "
                     f"{config.model.image_size}px ones; train the classifier at the U-Net's size.")
  return classifier_lib.classifier_grad_fn(
      lambda x, t: classifier.apply({"params": params}, x, t), config.sample.get("classifier_scale", 1.0))


def write_samples(model, params, config, workdir: str, step: int, prompts: Sequence[str], method: str, steps: int,
                  guidance_scale: float, seed: int = 0, tokenizer=None) -> dict:
  """Samples a grid; writes samples/grid_<step>.png (captioned), one PNG per sample and the captions.

  prompts: one per sample for a text model (else only their number counts, at
  least config.sample.num_images). Returns dict(grid=path, images=[paths]).
  """
  num = len(prompts) if model.text is not None and not model.super_res else config.sample.get(
      "num_images", max(len(prompts), 1))
  cond, captions = conditions(model, config, num, prompts, tokenizer)
  grad_fn = classifier_guidance(config)
  if grad_fn is not None and "y" not in cond:
    cond["y"] = np.arange(len(captions), dtype=np.int32) % config.model.get("num_classes", 1)
  images = text_to_image.sample_unet(model, params, config.diffusion, cond, len(captions), method=method,
                                     steps=steps, guidance_scale=guidance_scale, eta=config.sample.eta, seed=seed,
                                     grad_fn=grad_fn, min_timestep=config.sample.get("min_timestep", 0))
  images = images_lib.to_uint8(np.asarray(images))
  out_dir = os.path.join(workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  grid_path = os.path.join(out_dir, f"grid_{step}.png")
  images_lib.write_png(grid_path, images_lib.captioned_grid(images, captions, columns=min(len(captions), 4)))
  paths = []
  for i, (caption, image) in enumerate(zip(captions, images)):
    path = os.path.join(out_dir, f"{step}_{i:02d}_{_slug(caption)}.png".replace("_.png", ".png"))
    images_lib.write_png(path, image)
    paths.append(path)
  with open(os.path.join(out_dir, f"prompts_{step}.txt"), "w") as f:
    f.write("\n".join(f"{i:02d}\t{p}" for i, p in enumerate(captions)) + "\n")
  return {"grid": grid_path, "images": paths}


def sample_to_files(config, workdir: str, prompts: Optional[Sequence[str]] = None, method: Optional[str] = None,
                    steps: Optional[int] = None, guidance_scale: Optional[float] = None, seed: int = 0,
                    step: Optional[int] = None) -> dict:
  """Samples the latest checkpoint of workdir, or the saved `step` (EMA params unless config.sample.use_ema is False).

  Unset arguments come from config.sample. Returns write_samples' dict.
  """
  if config.model.name != "unet":
    raise ValueError(f"--mode=sample draws images from a U-Net's workdir; this config trains "
                     f"model.name={config.model.name!r}. Sample the U-Net's workdir (a classifier guides it "
                     "through config.sample.classifier_workdir).")
  model, params, step = checkpoint.load_params(config, workdir, config.sample.use_ema, step)
  return write_samples(
      model, params, config, workdir, step, list(prompts or config.sample.get("prompts", ())),
      method or config.sample.method,
      steps or config.sample.steps, config.sample.guidance if guidance_scale is None else guidance_scale, seed)
