"""Sampling a trained U-Net stage to PNG files: --mode=sample, and the training loop's periodic grids."""

import os
from typing import Callable, Optional, Sequence

import numpy as np

from t2i_jax import config_keys, models
from t2i_jax.data import input_pipeline
from t2i_jax.models import classifier as classifier_lib, frozen
from t2i_jax.pipelines import images as images_lib, stage as stage_lib, text_to_image
from t2i_jax.train import families


# The U-Nets that draw from prompts alone (an inpainting one also fills a given image: inpaint_files).
PROMPT_ROLES = ("text", "inpaint")


def _test_batch(config, num: int) -> dict:
  """The first `num` examples of config.sample.split at the data's image size (numpy)."""
  source = input_pipeline.make_source(config.data, config.sample.split)
  return next(input_pipeline.create_iterator(source, batch_size=num, seed=0, shuffle=False, num_epochs=1,
                                             num_threads=0, image_size=config.data.image_size))


def conditions(stage: stage_lib.Stage, num: int, prompts: Optional[Sequence[str]] = None):
  """(cond, captions): the U-Net's conditioning for `num` samples and a caption for each grid cell.

  text U-Net: the prompts; class-conditional: config.sample.labels (default
  0, 1, 2, ...); super-resolution: the first `num` images of the data's test
  split, downsampled, with their captions as prompts; unCLIP's decoder: the frozen
  CLIP's embeddings of those test images (so the grid shows what the decoder
  keeps of an embedding) and their captions; unconditional: {}.
  """
  model, config = stage.model, stage.config
  cond, captions = {}, [""] * num
  if model.super_res or model.clip_dim is not None:
    batch = _test_batch(config, num)
    images = batch["image"]
    captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in batch.get("caption", captions)]
    prompts = captions if model.text is not None else None
    if model.super_res:
      small = input_pipeline.downsample(images, families.unet.downsample_factor(config))
      low_res = input_pipeline.downsample(small, config_keys.section_of(config, "low_res").factor)
      cond.update(text_to_image.low_res_cond(stage, low_res))
    if model.clip_dim is not None:
      clip = stage_lib.load_stage(config.decoder.clip_workdir)
      cond["clip_emb"] = frozen.embed_images(clip.model, clip.params, images)
  if model.text is not None:
    if not prompts:
      raise ValueError("a text-conditional model needs prompts: pass --prompt or set config.sample.prompts.")
    cond = stage.text_cond(prompts, cond)
    captions = list(prompts)
  elif model.num_classes is not None:
    labels = list(config.sample.labels or range(num))[:num]
    cond["y"] = np.asarray(labels, np.int32) % model.num_classes
    captions = [f"class {y}" for y in cond["y"]]
  return cond, captions


def classifier_guidance(config):
  """The grad_fn of config.sample.classifier_workdir's noisy classifier at config.sample.classifier_scale, or None.

  Guided diffusion's recipe: a class-conditional (or unconditional) U-Net sampled
  with s·∇ log p(y | x_t) from a separately trained classifier
  (configs/adm_imagenet64.py:classifier) added to each step's mean.
  """
  workdir = config.sample.classifier_workdir
  if not workdir:
    return None
  classifier = stage_lib.load_stage(workdir, use_ema=True)
  if classifier.model.image_size != config.model.image_size:
    raise ValueError(f"the classifier in {workdir} reads {classifier.model.image_size}px images but the U-Net "
                     f"makes {config.model.image_size}px ones; train the classifier at the U-Net's size.")
  return classifier_lib.classifier_grad_fn(
      lambda x, t: classifier.model.apply({"params": classifier.params}, x, t), config.sample.classifier_scale)


def clip_guidance(stage: stage_lib.Stage, prompts: Sequence[str]):
  """The grad_fn of config.sample.clip_workdir's noised CLIP at config.sample.clip_scale for the prompts
  (GLIDE's CLIP guidance; classifier-free guidance, settings.guidance, can run beside it)."""
  config = stage.config
  if config.sample.classifier_workdir:
    raise ValueError("sample.classifier_workdir and sample.clip_workdir both guide by a gradient; set one.")
  if families.unet.role(config) not in PROMPT_ROLES:
    raise ValueError("CLIP guidance draws a text U-Net's samples towards its prompts; this U-Net does not "
                     "sample from prompts.")
  workdir = config.sample.clip_workdir
  clip_config = stage_lib.read_config(workdir)
  if models.module_class(clip_config.model) is not models.CLIP:
    raise ValueError(f"sample.clip_workdir={workdir} holds a {clip_config.model.name!r} model; point it at a "
                     "noised CLIP's workdir (configs/shapes_noised_clip.py).")
  clip_stage = stage_lib.load_stage(workdir, clip_config, use_ema=True)
  return text_to_image.clip_guidance(clip_stage, stage, prompts, config.sample.clip_scale)


def write_samples(stage: stage_lib.Stage, prompts: Sequence[str], settings: text_to_image.SampleSettings,
                  out_dir: str) -> dict:
  """Samples a grid; writes out_dir/grid_<step>.png (captioned), one PNG per sample and the captions.

  prompts: one per sample for a text model (else only their number counts, at
  least config.sample.num_images). Returns dict(grid=path, images=[paths]).
  """
  model, config, step = stage.model, stage.config, stage.step
  num = len(prompts) if families.unet.role(config) in PROMPT_ROLES else max(config.sample.num_images, len(prompts))
  cond, captions = conditions(stage, num, prompts)
  grad_fn = classifier_guidance(config)
  if grad_fn is not None and "y" not in cond:
    cond["y"] = np.arange(len(captions), dtype=np.int32) % (model.num_classes or 1)
  if config.sample.clip_workdir:
    grad_fn = clip_guidance(stage, captions)
  images = text_to_image.sample_unet(model, stage.params, stage.diffusion, cond, len(captions), settings, grad_fn)
  return images_lib.save_images(images_lib.to_uint8(np.asarray(images)), captions, out_dir, step)


def sample_to_files(config, workdir: str, prompts: Optional[Sequence[str]] = None, step: Optional[int] = None,
                    **overrides) -> dict:
  """--mode=sample: samples the workdir's newest checkpoint that restores, or the saved `step`, into
  workdir/samples (EMA params unless config.sample.use_ema is False).

  overrides: SampleSettings fields (method, steps, guidance, seed); None keeps config.sample's.
  Everything is validated before the checkpoint is read. Returns write_samples' dict.
  """
  families.of(config).check_sample(config, prompts)
  config = config_keys.complete(config)
  settings = text_to_image.SampleSettings.from_config(config.sample, **overrides)
  stage = stage_lib.load_stage(workdir, config, step=step)
  return write_samples(stage, list(prompts or config.sample.prompts), settings, os.path.join(workdir, "samples"))


def periodic_sampler(config, workdir: str) -> Optional[Callable]:
  """For loop.train's sample_fn: (params, step) -> the grid path of config.sample's prompts and settings,
  written to workdir/samples; None for a model that is not a U-Net or samples latents."""
  if not families.of(config).samples_in_training(config):
    return None
  config = config_keys.complete(config)
  model = models.build(config.model)
  settings = text_to_image.SampleSettings.from_config(config.sample)
  tokenizer = families.tokenizer_for(config)

  def sample(params, step: int) -> str:
    stage = stage_lib.Stage(workdir, config, model, params, step, tokenizer)
    return write_samples(stage, list(config.sample.prompts), settings, os.path.join(workdir, "samples"))["grid"]

  return sample
