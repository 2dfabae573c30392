"""--mode=sample on a latent diffusion chain config: prompts written as a PNG grid of the decoded samples."""

import os
from typing import Optional, Sequence

from t2i_jax.pipelines import images as images_lib, latent, text_to_image
from t2i_jax.train import config_keys


def chain_config(config):
  """The chain config with every default filled in; ValueError unless it has a latent section."""
  if config.get("latent") is None:
    raise ValueError("this is not a latent diffusion chain config (no latent section); see "
                     "configs/shapes_latent_chain.py.")
  return config_keys.complete(config)


def settings_for(section, model: latent.LatentModel, seed: int = 0, overrides: Optional[dict] = None):
  """The U-Net's SampleSettings: the chain's METHOD:STEPS:GUIDANCE over the U-Net's own sample section,
  `overrides` (an eval row's, the CLI's non-None values) on top."""
  return text_to_image.stage_settings(model.unet, section.sampler, seed, **(overrides or {}))


def sample_to_files(config, out_dir: str, prompts: Optional[Sequence[str]] = None, seed: int = 0, **unet) -> dict:
  """Samples every prompt latent.num_images times (rows of one batch) into out_dir/samples. unet: the U-Net's
  SampleSettings overrides (method, steps, guidance). Every stage is loaded and checked before anything is
  written. Returns dict(grid=path, images=[its PNGs], grids={"image": path})."""
  config = chain_config(config)
  section = config.latent
  captions = images_lib.chain_captions(prompts, section, "latent")
  model = latent.load_latent(section)
  settings = settings_for(section, model, seed, {k: v for k, v in unet.items() if v is not None})
  result = latent.generate(model, captions, settings)
  return images_lib.save_chain_outputs(result, latent.OUTPUTS, captions, os.path.join(out_dir, "samples"),
                                       "prompts", columns=section.num_images)
