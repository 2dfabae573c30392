"""The chain protocol: a text-to-image system of several trained stages, as one object.

GLIDE's cascade (pipelines/glide.py), unCLIP (unclip.py) and latent diffusion (latent.py) each define one
`Chain`; the registry (chains.py) holds them, and --mode=sample, --mode=eval and the experiments ask it.
A chain config has one section, named by the chain (its keys: config_keys.DEFAULTS[section]), that names
each stage's workdir and sampler. For each chain:

  stages = chain.load(section)                                # every stage read and checked
  settings = chain.settings(section, stages, seed, overrides)  # overrides: the first image stage's sampler
  images = chain.generate(stages, prompts, settings)          # {output: [N, H, W, 3] in [-1, 1]}, chain.outputs

`sample_to_files` is --mode=sample for any chain.
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence, Tuple

from t2i_jax import config_keys
from t2i_jax.pipelines import images as images_lib, text_to_image


@dataclasses.dataclass(frozen=True)
class Chain:
  """A chain of trained stages.

  Attributes:
    section: its config section's name (config_keys.CHAINS).
    outputs: the image outputs of `generate`, lowest resolution first (the last is the chain's output).
    load: (section) -> the loaded stages (one object), checked against each other before any
      checkpoint is read.
    settings: (section, stages, seed=0, overrides=None) -> how every stage samples (an object with
      `reseeded(seed)`); overrides: SampleSettings fields of the first image stage (an eval row's, the CLI's).
    generate: (stages, prompts, settings) -> dict with an image [N, H, W, 3] in [-1, 1] per output.
    recorded: the section's keys written beside eval metrics (the stages' samplers that eval does not vary).
    from_images: optional (stages, settings, num, image path, image2 path or None) -> (result, captions, tag):
      --mode=sample --image (unCLIP's variations and interpolations).
    parse_setting: an --eval_setting string -> the overrides `settings` takes (a diffusion chain's
      METHOD:STEPS:GUIDANCE, text_to_image.parse_setting, by default).
  """
  section: str
  outputs: Tuple[str, ...]
  load: Callable
  settings: Callable
  generate: Callable
  recorded: Tuple[str, ...] = ()
  from_images: Optional[Callable] = None
  parse_setting: Callable = text_to_image.parse_setting

  def check_images(self, image: Optional[str], image2: Optional[str], prompts) -> None:
    """Refuses --image / --image2 this chain cannot take, before anything is loaded."""
    if image2 and not image:
      raise ValueError("--image2 is the end of an interpolation that starts at --image; give both.")
    if image and self.from_images is None:
      raise ValueError(f"--image: a {self.section} chain samples from prompts; inpaint an image with a text "
                       "U-Net's config and workdir (configs/shapes_inpaint.py) and --mask or --box.")
    if image and prompts:
      raise ValueError("give either --prompt (text to image) or --image (variations / interpolation), not both.")


def sample_to_files(chain: Chain, config, out_dir: str, prompts: Optional[Sequence[str]] = None, seed: int = 0,
                    image: Optional[str] = None, image2: Optional[str] = None, **overrides) -> dict:
  """--mode=sample on a chain config: every prompt (given, else the section's) section.num_images times,
  rows of one batch, written as a PNG grid per output into out_dir/samples; with `image` (a chain with
  from_images), its variations, or with `image2` too, their interpolation. overrides: the first image
  stage's SampleSettings fields (method, steps, guidance; None keeps the chain config's).

  Everything is validated and every stage loaded and checked before anything is written.
  Returns dict(grid=path of the final output's grid, images=[its PNGs], grids={output: path}).
  """
  chain.check_images(image, image2, prompts)
  section = config_keys.complete(config)[chain.section]
  if isinstance(section.num_images, bool) or not isinstance(section.num_images, int) or section.num_images < 1:
    raise ValueError(f"{chain.section}.num_images={section.num_images!r}: draw at least 1 image per prompt.")
  captions = None if image else images_lib.chain_captions(prompts, section, chain.section)
  stages = chain.load(section)
  settings = chain.settings(section, stages, seed, {k: v for k, v in overrides.items() if v is not None})
  if image:
    result, captions, tag = chain.from_images(stages, settings, section.num_images, image, image2)
  else:
    result, tag = chain.generate(stages, captions, settings), "prompts"
  return images_lib.save_chain_outputs(result, chain.outputs, captions, os.path.join(out_dir, "samples"), tag,
                                       columns=section.num_images)
