"""GLIDE's cascade (Nichol et al., 2022): prompt → base text U-Net → text-conditional upsampler.

A cascade is two trained stages, each read from its workdir (`stage.load_stage`):

  base       caption → h px image (classifier-free guidance)     configs/shapes_default.py (24 px)
  upsampler  (h px image, caption) → H = factor·h px image        configs/shapes_glide_upsampler.py (48 px)

The upsampler is fed the base's samples, noised at the fixed level it samples at (noise-conditioning
augmentation, `text_to_image.low_res_cond`): it trained on box-downsampled renders noised at random
levels, so the base's slightly-off samples look like inputs it has seen. Each stage is one jit-compiled
sampling program whose params and guidance scale are arguments (`text_to_image.sample_unet`). The
published pair, configs/glide_base64.py and configs/glide_upsample256.py, chains the same way.
"""

import dataclasses
from typing import Optional, Sequence

from t2i_jax import config_keys
from t2i_jax.pipelines import chain as chain_lib, stage as stage_lib, text_to_image
from t2i_jax.pipelines.text_to_image import SampleSettings
from t2i_jax.train import families

OUTPUTS = ("base", "upsampler")


@dataclasses.dataclass(frozen=True)
class Stages:
  """The loaded stages of a GLIDE cascade (upsampler None: the base's resolution is the output)."""
  base: stage_lib.Stage
  upsampler: Optional[stage_lib.Stage] = None


@dataclasses.dataclass(frozen=True)
class Settings:
  """How each stage samples."""
  base: SampleSettings
  upsampler: SampleSettings

  @classmethod
  def from_config(cls, glide_config, cascade: Stages, seed: int = 0,
                  base: Optional[dict] = None) -> "Settings":
    """The chain config's glide section ("METHOD:STEPS:GUIDANCE" per stage) over each stage's own sample
    section (η, lowest timestep); `base` overrides the base's setting (an eval row's, the CLI's)."""
    upsampler = cascade.upsampler or cascade.base  # without one its settings are parsed but unused
    return cls(base=text_to_image.stage_settings(cascade.base, glide_config.base, seed, **(base or {})),
               upsampler=text_to_image.stage_settings(upsampler, glide_config.upsampler, seed))

  def reseeded(self, seed: int) -> "Settings":
    return Settings(*(dataclasses.replace(s, seed=seed) for s in (self.base, self.upsampler)))


def check_cascade(configs: dict) -> None:
  """Raises a ValueError naming both sides unless the stages fit: the base a text U-Net that is not itself
  an upsampler, the upsampler a super-resolution U-Net whose input size is the base's output size, with
  the base's channels.

  configs: {"base" | "upsampler": (workdir, that run's config)}.
  """
  base_dir, base = configs["base"]
  model = base.model
  if families.unet.role(base) != "text":
    raise ValueError(f"glide.base_workdir={base_dir} holds a model that is not a text-conditional base U-Net; "
                     "point it at a workdir of configs/shapes_default.py (or another text U-Net).")
  if "upsampler" not in configs:
    return
  up_dir, up = configs["upsampler"]
  if families.unet.role(up) != "super_res":
    raise ValueError(f"glide.upsampler_workdir={up_dir} holds a model that is not a super-resolution U-Net; "
                     "point it at a workdir of configs/shapes_glide_upsampler.py.")
  factor = config_keys.section_of(up, "low_res").factor
  size, high = model.image_size, up.model.image_size
  if high != size * factor:
    raise ValueError(f"the upsampler in {up_dir} takes {high // factor}px inputs (image_size={high}, "
                     f"low_res.factor={factor}) but the base in {base_dir} makes {size}px images; train them "
                     "at sizes that meet.")
  if up.model.in_channels != model.out_channels:
    raise ValueError(f"the upsampler in {up_dir} reads {up.model.in_channels}-channel images but the base in "
                     f"{base_dir} makes {model.out_channels}-channel ones.")


def load(glide_config, use_upsampler: bool = True) -> Stages:
  """The stages named by a chain config's glide section, checked against each other before any checkpoint
  is read."""
  paths = dict(base=glide_config.base_workdir, upsampler=glide_config.upsampler_workdir if use_upsampler else "")
  configs = {name: (path, stage_lib.read_config(path)) for name, path in paths.items() if path}
  check_cascade(configs)
  return Stages(**{name: stage_lib.load_stage(path, config) for name, (path, config) in configs.items()})


def generate(cascade: Stages, prompts: Sequence[str], settings: Settings) -> dict:
  """Prompts → dict(base [N, h, h, 3], upsampler [N, H, H, 3] when the cascade has one), in [-1, 1]; the
  upsampler reads the same prompts."""
  base = text_to_image.generate(cascade.base, prompts, settings.base)
  out = {"base": base}
  if cascade.upsampler is not None:
    out["upsampler"] = text_to_image.super_resolve(cascade.upsampler, base, settings.upsampler, prompts)
  return out


CHAIN = chain_lib.Chain(section="glide", outputs=OUTPUTS, load=load, settings=Settings.from_config, generate=generate,
                        recorded=("upsampler",))
