"""Image grids and PNG files, with nothing but numpy and zlib."""

import os
import re
import struct
import zlib
from typing import Sequence

import numpy as np


def open_image(path: str, flag: str):
  """The PIL image of a file named by the command-line flag `flag`, read in full; a one-line error when the
  file is missing (FileNotFoundError) or is not an image (ValueError)."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise FileNotFoundError(f"--{flag} {path}: no such file; give a PNG or JPEG path.")
  try:
    image = Image.open(path)
    image.load()
  except (UnidentifiedImageError, OSError) as error:
    raise ValueError(f"--{flag} {path} is not an image file that can be read ({type(error).__name__}); give a "
                     "PNG or JPEG.") from None
  return image


def read_image(path: str, size: int, flag: str = "image", resize: bool = False) -> np.ndarray:
  """uint8 [size, size, 3] from an RGB image file (PNG, JPEG): resized with a box filter when `resize` (a CLIP
  embeds any picture), else refused unless it is size × size (inpainting fills the pixels it is given).

  flag: the command-line flag that named the file, for the one-line errors (a missing file, a file that is
  not an image, transparent pixels, a mode that is not RGB).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = open_image(path, flag)
  if image.mode == "RGBA" and np.asarray(image)[..., 3].min() < 255:
    raise ValueError(f"--{flag} {path} has transparent pixels; save the image as RGB (to inpaint a region, "
                     "mark it with --mask).")
  if image.mode not in ("RGB", "RGBA", "P"):
    raise ValueError(f"--{flag} {path} has mode {image.mode!r} ({len(image.getbands())} channel(s)); save it as "
                     "an RGB PNG.")
  image = image.convert("RGB")
  if image.size != (size, size):
    if not resize:
      raise ValueError(f"--{flag} {path} is {image.size[0]}x{image.size[1]} but this U-Net makes {size}x{size} "
                       f"images; resize it to {size}x{size} first.")
    image = image.resize((size, size), Image.BOX)
  return np.asarray(image)


def to_uint8(images) -> np.ndarray:
  """Float images in [-1, 1] -> uint8 [..., H, W, C]."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int, pad: int = 2, value: int = 255) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows·(H+pad)+pad, columns·(W+pad)+pad, C] grid."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), value, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = image
  return grid


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] (or [H, W, 1]) image as an 8-bit PNG."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  h, w, c = image.shape
  if c not in (1, 3):
    raise ValueError(f"write_png takes 1 or 3 channels, got {c}.")
  raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 per row

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

  header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 0, 0, 0, 0)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def captioned_grid(images: np.ndarray, captions, columns: int, scale: int = 4, caption_lines: int = 3) -> np.ndarray:
  """uint8 [N, H, W, 3] images, each enlarged `scale`× (nearest) with its caption wrapped beneath.

  Uses Pillow's bundled default font, so it works offline.
  """
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  big = np.repeat(np.repeat(np.asarray(images, np.uint8), scale, axis=1), scale, axis=2)
  n, h, w, _ = big.shape
  line_height = 12
  cells = []
  for image, caption in zip(big, captions):
    cell = Image.new("RGB", (w, h + caption_lines * line_height + 4), "white")
    cell.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(cell)
    lines, current = [], ""
    for word in caption.split():
      trial = f"{current} {word}".strip()
      if draw.textlength(trial, font=font) <= w - 4 or not current:
        current = trial
      else:
        lines.append(current)
        current = word
    lines.append(current)
    if len(lines) > caption_lines:  # keep the grid regular; the full prompts are in prompts_<step>.txt
      lines = lines[:caption_lines - 1] + [lines[caption_lines - 1] + " …"]
    for i, line in enumerate(lines):
      draw.text((2, h + 2 + i * line_height), line, fill="black", font=font)
    cells.append(np.asarray(cell))
  return make_grid(np.stack(cells), columns)


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def save_images(images: np.ndarray, captions, out_dir: str, tag, columns: int = 4) -> dict:
  """Writes out_dir/grid_<tag>.png (captioned), one PNG per image and prompts_<tag>.txt.

  images: uint8 [N, H, W, 3]; captions: N strings. Returns dict(grid=path, images=[paths]).
  """
  os.makedirs(out_dir, exist_ok=True)
  grid_path = os.path.join(out_dir, f"grid_{tag}.png")
  write_png(grid_path, captioned_grid(images, captions, columns=min(len(captions), columns)))
  paths = []
  for i, (caption, image) in enumerate(zip(captions, images)):
    path = os.path.join(out_dir, f"{tag}_{i:02d}_{_slug(caption)}.png".replace("_.png", ".png"))
    write_png(path, image)
    paths.append(path)
  with open(os.path.join(out_dir, f"prompts_{tag}.txt"), "w") as f:
    f.write("\n".join(f"{i:02d}\t{p}" for i, p in enumerate(captions)) + "\n")
  return {"grid": grid_path, "images": paths}


def save_chain_outputs(result: dict, stages: Sequence[str], captions, out_dir: str, tag: str,
                       columns: int = 4) -> dict:
  """save_images of each of a chain's stage outputs (images [N, H, W, 3] in [-1, 1] under result[stage],
  for the `stages` in order that are present) as `<tag>_<stage>`.

  Returns dict(grid=the last stage's grid, images=its PNGs, grids={stage: grid path}).
  """
  grids, paths = {}, []
  for name in stages:
    if name in result:
      saved = save_images(to_uint8(np.asarray(result[name])), captions, out_dir, f"{tag}_{name}", columns)
      grids[name], paths = saved["grid"], saved["images"]
  return {"grid": grids[list(grids)[-1]], "images": paths, "grids": grids}


def chain_captions(prompts, section, name: str):
  """Each prompt (given, else the chain section's) section.num_images times in a row: a chain's batch of
  captions for sample_to_files; ValueError when there is none. name: the section's, for the message."""
  prompts = list(prompts or section.prompts)
  if not prompts:
    raise ValueError(f"nothing to sample: pass --prompt, or set {name}.prompts in the chain config.")
  return [p for p in prompts for _ in range(section.num_images)]
