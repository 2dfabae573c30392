"""Inpainting (GLIDE §3.4): an image, a mask and a prompt → images that keep the image's known region.

Two methods, one compiled sampling loop:
- replacement, for any text U-Net: at every step the known region of x_t is replaced by the input
  noised to that step, and pasted into each x0 prediction (samplers.sample's `inpaint`), so the output
  holds the input exactly there; the model never sees what it is filling around until it is noised in;
- a trained inpainting model (model.inpaint, configs/shapes_inpaint.py) also reads the masked image and
  the mask as input channels at every step. GLIDE samples it with replacement as well (`replace=True`);
  `replace=False` samples on its conditioning alone, so how well it keeps the known region is measurable.

Images are float [N, H, W, C] in [-1, 1]; masks float [N, H, W, 1] with 1 on the known pixels and 0 on
the region to fill (either may have N = 1, shared by every prompt).
"""

from typing import Sequence

import numpy as np

from t2i_jax.pipelines import text_to_image


def check_inputs(image, mask, size: int, channels: int):
  """(image float32 [N, size, size, C], mask float32 [N', size, size, 1]), or a ValueError saying what is wrong.

  An image [H, W, C] or mask [H, W] / [H, W, 1] without a batch axis gets one.
  """
  image, mask = np.asarray(image, np.float32), np.asarray(mask, np.float32)
  image = image[None] if image.ndim == 3 else image
  if mask.ndim == 2 or (mask.ndim == 3 and mask.shape == (size, size, 1)):
    mask = mask.reshape((1, size, size, 1)) if mask.size == size * size else mask[None]
  elif mask.ndim == 3:  # [N, H, W]
    mask = mask[..., None]
  if image.ndim != 4 or image.shape[1:] != (size, size, channels):
    raise ValueError(f"the image has shape {image.shape} but this U-Net makes {size}x{size} images with "
                     f"{channels} channels; give [N, {size}, {size}, {channels}] (resize or convert it first).")
  if mask.ndim != 4 or mask.shape[1:] != (size, size, 1):
    raise ValueError(f"the mask has shape {mask.shape}; give one channel at the image's size, [N, {size}, {size}, "
                     "1], 1 on the pixels to keep and 0 on those to fill.")
  if not np.all(np.isfinite(image)) or image.min() < -1.001 or image.max() > 1.001:
    raise ValueError(f"the image's values span [{np.nanmin(image):.3g}, {np.nanmax(image):.3g}]; give values in "
                     "[-1, 1] (uint8 / 127.5 − 1).")
  if not np.all(np.isfinite(mask)) or mask.min() < 0.0 or mask.max() > 1.0:
    raise ValueError(f"the mask's values span [{np.nanmin(mask):.3g}, {np.nanmax(mask):.3g}]; give values in "
                     "[0, 1] (1 = keep, 0 = fill).")
  if mask.min() == 1.0:
    raise ValueError("the mask keeps every pixel (all 1): mark the region to fill with 0.")
  return np.clip(image, -1.0, 1.0), mask


def box_mask(size: int, box: Sequence[int]) -> np.ndarray:
  """float32 [1, size, size, 1]: 0 on the box (left, top, right, bottom in pixels, right and bottom
  exclusive) to fill, 1 elsewhere."""
  if len(box) != 4:
    raise ValueError(f"box={tuple(box)} must be four pixel numbers LEFT,TOP,RIGHT,BOTTOM (e.g. 12,0,24,12).")
  left, top, right, bottom = (int(v) for v in box)
  if not (0 <= left < right <= size and 0 <= top < bottom <= size):
    raise ValueError(f"box={tuple(box)} must satisfy 0 <= LEFT < RIGHT <= {size} and 0 <= TOP < BOTTOM <= {size} "
                     "(pixels of the image, right and bottom exclusive).")
  mask = np.ones((1, size, size, 1), np.float32)
  mask[0, top:bottom, left:right] = 0.0
  return mask


def inpaint(stage, image, mask, prompts: Sequence[str], settings: text_to_image.SampleSettings,
            replace: bool = True):
  """Images [len(prompts), H, W, C] in [-1, 1] that fill the mask's 0 region of `image` after the prompts.

  Args:
    stage: a text U-Net stage (`stage.Stage`); an inpainting one (model.inpaint) reads the masked image.
    image: [N, H, W, C] in [-1, 1] (N = 1 or len(prompts)); mask: [N, H, W, 1], 1 = known.
    settings: sampler, steps, classifier-free guidance (on the caption; the image and mask go to both
      halves) and seed.
    replace: paste the known region at every step (the output equals the input there); False only
      for an inpainting model, which then keeps it by its conditioning alone.
  """
  model = stage.model
  if model.text is None or model.super_res or model.clip_dim is not None:
    raise ValueError(f"the U-Net in {stage.workdir or 'this stage'} does not sample from prompts; inpaint with a "
                     "text U-Net (configs/shapes_default.py, or its inpainting model configs/shapes_inpaint.py).")
  if not (model.inpaint or replace):
    raise ValueError(f"the U-Net in {stage.workdir or 'this stage'} has no inpainting channels: it inpaints by "
                     "replacement only (replace=True), or train configs/shapes_inpaint.py from it.")
  image, mask = check_inputs(image, mask, model.image_size, model.in_channels)
  num = len(prompts)
  for name, array in (("image", image), ("mask", mask)):
    if array.shape[0] not in (1, num):
      raise ValueError(f"{array.shape[0]} {name}s for {num} prompts; give one {name}, or one per prompt.")
  image = np.broadcast_to(image, (num,) + image.shape[1:])
  mask = np.broadcast_to(mask, (num,) + mask.shape[1:])
  cond = stage.text_cond(prompts)
  if model.inpaint:
    cond.update(inpaint_image=image, inpaint_mask=mask)
  return text_to_image.sample_unet(model, stage.params, stage.diffusion, cond, num, settings,
                                   inpaint=(image, mask) if replace else None)


def unmasked_psnr(images, image, mask) -> np.ndarray:
  """float64 [N]: PSNR in dB (peak-to-peak 2, images in [-1, 1]) of images [N, H, W, C] against image
  [N or 1, H, W, C] over the known pixels (mask 1); inf where they are equal there."""
  images, image = np.asarray(images, np.float64), np.asarray(image, np.float64)
  weight = np.broadcast_to(np.asarray(mask, np.float64), images.shape[:-1] + (1,))
  squared = ((images - image) ** 2 * weight).sum(axis=(1, 2, 3))
  mse = squared / np.maximum(weight.sum(axis=(1, 2, 3)) * images.shape[-1], 1e-12)
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(4.0 / mse)
