"""--mode=sample with --image and --mask (or --box) on a text U-Net's config: the inpainted grid as PNG.

Files: the image an RGB PNG (or JPEG) at the U-Net's size; the mask a one-channel PNG of the same size,
white (255) on the region to fill and black (0) on what to keep, as most inpainting tools draw it.
"""

import os
from typing import Optional, Sequence

import numpy as np

from t2i_jax import config_keys
from t2i_jax.pipelines import images as images_lib, inpaint, stage as stage_lib, text_to_image
from t2i_jax.train import families


def read_mask(path: str, size: int) -> np.ndarray:
  """float32 [1, size, size, 1], 1 = keep, from a black (keep) and white (fill) one-channel image file."""
  image = images_lib.open_image(path, "mask")
  if image.size != (size, size):
    raise ValueError(f"--mask {path} is {image.size[0]}x{image.size[1]} but this U-Net makes {size}x{size} "
                     f"images; draw the mask at {size}x{size}.")
  if image.mode not in ("L", "1"):
    raise ValueError(f"--mask {path} has mode {image.mode!r} ({len(image.getbands())} channels); save it as a "
                     "one-channel (grayscale) PNG, white on the region to fill and black elsewhere.")
  values = np.asarray(image.convert("L"))
  other = np.setdiff1d(np.unique(values), [0, 255])
  if other.size:
    raise ValueError(f"--mask {path} holds values other than 0 and 255 (e.g. {int(other[0])}); draw it in pure "
                     "black (keep) and white (fill).")
  return (values < 128).astype(np.float32)[None, :, :, None]


def parse_box(text: str):
  """"LEFT,TOP,RIGHT,BOTTOM" -> four ints (pixels; right and bottom exclusive)."""
  try:
    return tuple(int(v) for v in text.split(","))
  except ValueError:
    raise ValueError(f"--box={text!r} must be four integers LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. 12,0,24,12."
                     ) from None


def inpaint_to_files(config, workdir: str, image: str, mask: Optional[str] = None, box: Optional[str] = None,
                     prompts: Optional[Sequence[str]] = None, step: Optional[int] = None, **overrides) -> dict:
  """--mode=sample --image=PATH --mask=PATH|--box=L,T,R,B: each prompt's inpaintings written to
  workdir/samples/grid_inpaint_<step>.png, one row per prompt: the input, the input with its hole (grey),
  then config.sample.num_images samples. An inpainting model (model.inpaint) samples with its
  conditioning and replacement, any other text U-Net by replacement alone (pipelines.inpaint).

  overrides: SampleSettings fields (method, steps, guidance, seed). The files are read and checked
  before the checkpoint is.
  """
  if (mask is None) == (box is None):
    raise ValueError("--image on a U-Net's config inpaints it: give the region to fill as --mask=PATH or "
                     "--box=LEFT,TOP,RIGHT,BOTTOM (one of them).")
  config = config_keys.complete(config)
  model = config.model
  if families.unet.role(config) not in ("text", "inpaint"):
    raise ValueError("--image with --mask or --box inpaints with a text U-Net; this config is not one "
                     "(configs/shapes_default.py and configs/shapes_inpaint.py are).")
  size = model.image_size
  known = images_lib.read_image(image, size, "image").astype(np.float32)[None] / 127.5 - 1.0
  hole = read_mask(mask, size) if mask is not None else inpaint.box_mask(size, parse_box(box))
  known, hole = inpaint.check_inputs(known, hole, size, model.in_channels)
  prompts = list(prompts or config.sample.prompts)
  if not prompts:
    raise ValueError("inpainting needs a prompt for the filled region's scene: pass --prompt.")
  settings = text_to_image.SampleSettings.from_config(config.sample, **overrides)
  stage = stage_lib.load_stage(workdir, config, step=step)
  num = config.sample.num_images
  samples = inpaint.inpaint(stage, known, hole, [p for p in prompts for _ in range(num)], settings)
  shown = known * hole  # the hole drawn mid-grey (0 in [-1, 1])
  rows, captions = [], []
  for i, prompt in enumerate(prompts):
    rows += [known[0], shown[0], *np.asarray(samples[i * num:(i + 1) * num])]
    captions += ["input", "to fill"] + [prompt] * num
  return images_lib.save_images(images_lib.to_uint8(np.stack(rows)), captions, os.path.join(workdir, "samples"),
                                f"inpaint_{stage.step}", columns=num + 2)
