"""--mode=sample on an unCLIP chain config: prompts, variations or interpolations written as PNG grids."""

import os
from typing import Optional, Sequence

import numpy as np

from t2i_jax.pipelines import images as images_lib, unclip
from t2i_jax.train import config_keys


def chain_config(config):
  """The chain config with every default filled in; ValueError unless it has an unclip section."""
  if config.get("unclip") is None:
    raise ValueError("this is not an unCLIP chain config (no unclip section); see configs/shapes_unclip.py.")
  return config_keys.complete(config)


def sample_to_files(config, out_dir: str, prompts: Optional[Sequence[str]] = None, image: Optional[str] = None,
                    image2: Optional[str] = None, seed: int = 0, **decoder) -> dict:
  """Samples the chain into out_dir/samples: every prompt unclip.num_images times (rows of one batch);
  with `image`, that many variations of it; with `image` and `image2`, as many steps of their
  interpolation. decoder: the decoder's SampleSettings overrides (method, steps, guidance).

  Everything is validated and every stage loaded and checked before anything is written.
  Returns dict(grid=path of the final stage's grid, images=[paths], grids={stage: path}).
  """
  config = chain_config(config)
  section = config.unclip
  if image2 and not image:
    raise ValueError("--image2 is the end of an interpolation that starts at --image; give both.")
  if image and prompts:
    raise ValueError("give either --prompt (text to image) or --image (variations / interpolation), not both.")
  prompts = list(prompts or section.prompts)
  if not image and not prompts:
    raise ValueError("nothing to sample: pass --prompt, --image, or set unclip.prompts in the chain config.")
  chain = unclip.load_chain(section)
  settings = unclip.ChainSettings.from_config(section, chain, seed,
                                              {k: v for k, v in decoder.items() if v is not None})
  num = section.num_images
  if image:
    size = chain.clip.model.image_size
    first = unclip.read_image(image, size)
    if image2:
      result = unclip.interpolate(chain, first, unclip.read_image(image2, size), num, settings)
      captions = [f"slerp {w:.2f}" for w in np.linspace(0.0, 1.0, num)]
      tag = "interpolation"
    else:
      result = unclip.variations(chain, first, num, settings)
      captions = [f"variation {i}" for i in range(num)]
      tag = "variations"
  else:
    result = unclip.generate(chain, [p for p in prompts for _ in range(num)], settings)
    captions = [p for p in prompts for _ in range(num)]
    tag = "prompts"
  return images_lib.save_chain_outputs(result, ("decoder", "upsampler"), captions,
                                       os.path.join(out_dir, "samples"), tag, columns=num)
