"""Sampling from a training workdir: restore the latest checkpoint's EMA params, generate, write PNGs."""

import os
import re
from typing import Optional, Sequence

import jax
import numpy as np

from t2i_jax import models
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.pipelines import images as images_lib
from t2i_jax.pipelines.text_to_image import generate
from t2i_jax.train import checkpoint, sharding, state as state_lib


def load_params(config, workdir: str, use_ema: bool = True):
  """(model, params, step) from the latest checkpoint in workdir; ValueError if there is none."""
  model = models.build(config.model)
  init_state = state_lib.make_init_fn(model, config, state_lib.make_optimizer(config.optim))
  abstract = jax.eval_shape(init_state)  # shapes only: nothing is initialised
  manager = checkpoint.make_manager(workdir, config.train.max_to_keep)
  if manager.latest_step() is None:
    raise ValueError(f"{workdir} has no checkpoint to sample from; train first (--mode=train).")
  state, _, step = checkpoint.restore_or_init(manager, abstract, sharding.state_sharding(abstract, sharding.make_mesh()))
  return model, (state.ema_params if use_ema else state.params), step


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def write_samples(model, params, config, workdir: str, step: int, prompts: Sequence[str], method: str, steps: int,
                  guidance_scale: float, seed: int = 0, tokenizer=None) -> dict:
  """Generates one image per prompt; writes samples/grid_<step>.png (captioned), one PNG per prompt and
  the prompts. Returns dict(grid=path, images=[paths]). tokenizer: default config.data.tokenizer's."""
  if tokenizer is None:
    tokenizer = tokenizer_lib.load_tokenizer(config.data.tokenizer)
  images = generate(model, params, config.diffusion, prompts, tokenizer, config.data.context_length,
                    method=method, steps=steps, guidance_scale=guidance_scale, eta=config.sample.eta, seed=seed)
  images = images_lib.to_uint8(np.asarray(images))
  out_dir = os.path.join(workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  grid_path = os.path.join(out_dir, f"grid_{step}.png")
  images_lib.write_png(grid_path, images_lib.captioned_grid(images, prompts, columns=min(len(prompts), 4)))
  paths = []
  for i, (prompt, image) in enumerate(zip(prompts, images)):
    path = os.path.join(out_dir, f"{step}_{i:02d}_{_slug(prompt)}.png")
    images_lib.write_png(path, image)
    paths.append(path)
  with open(os.path.join(out_dir, f"prompts_{step}.txt"), "w") as f:
    f.write("\n".join(f"{i:02d}\t{p}" for i, p in enumerate(prompts)) + "\n")
  return {"grid": grid_path, "images": paths}


def sample_to_files(config, workdir: str, prompts: Optional[Sequence[str]] = None, method: Optional[str] = None,
                    steps: Optional[int] = None, guidance_scale: Optional[float] = None, seed: int = 0) -> dict:
  """Samples the latest checkpoint of workdir (EMA params unless config.sample.use_ema is False).

  Unset arguments come from config.sample. Returns write_samples' dict.
  """
  model, params, step = load_params(config, workdir, config.sample.use_ema)
  return write_samples(
      model, params, config, workdir, step, list(prompts or config.sample.prompts), method or config.sample.method,
      steps or config.sample.steps, config.sample.guidance if guidance_scale is None else guidance_scale, seed)
