"""--mode=sample on a GLIDE cascade config: prompts written as PNG grids of the base's and upsampler's samples."""

import os
from typing import Optional, Sequence

from t2i_jax.pipelines import glide, images as images_lib
from t2i_jax.train import config_keys


def cascade_config(config):
  """The chain config with every default filled in; ValueError unless it has a glide section."""
  if config.get("glide") is None:
    raise ValueError("this is not a GLIDE cascade config (no glide section); see configs/shapes_glide.py.")
  return config_keys.complete(config)


def sample_to_files(config, out_dir: str, prompts: Optional[Sequence[str]] = None, seed: int = 0, **base) -> dict:
  """Samples every prompt glide.num_images times (rows of one batch) into out_dir/samples. base: the base
  stage's SampleSettings overrides (method, steps, guidance). Both stages are loaded and checked before
  anything is written.

  Returns dict(grid=path of the final stage's grid, images=[its PNGs], grids={stage: path}).
  """
  config = cascade_config(config)
  section = config.glide
  captions = images_lib.chain_captions(prompts, section, "glide")
  cascade = glide.load_cascade(section)
  settings = glide.CascadeSettings.from_config(section, cascade, seed, {k: v for k, v in base.items() if v is not None})
  result = glide.generate(cascade, captions, settings)
  return images_lib.save_chain_outputs(result, glide.OUTPUTS, captions, os.path.join(out_dir, "samples"),
                                       "prompts", columns=section.num_images)
