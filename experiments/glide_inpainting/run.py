"""Does inpainting insert the asked-for object? GLIDE's trained inpainting model against replacement-only.

For each scene: a two-object test-split scene is drawn (objects A and B in a relation, their places
jittered as in the data); the input is A rendered alone at its place, the mask opens a box around where
B should go (B's half-size plus a pixel each side, A's own pixels kept), and the prompt is the two-object
scene's caption. The shapes oracle then reads each output:

  two objects  the oracle counts two (something was inserted);
  new object   two objects read, and B's colour and shape in B's slot (the oracle's canonical order);
               new colour, new shape: each alone;
  kept object  A's colour and shape in A's slot;
  relation     the whole prompt: both objects' colour, shape and size in their slots and the relation's
               axis (caption_metrics' binding accuracy);
  PSNR         of the unmasked region against the input (dB, images in [-1, 1]); replacement pastes the
               input there, so only the conditioning-only row has a finite value.

Rows: replacement-only on the base text U-Net; the inpainting model with its conditioning and replacement
(GLIDE's sampler); the inpainting model on its conditioning alone; and for reference the base drawing the
prompt from nothing (text to image), and the oracle on the true two-object renders.

  PYTHONPATH=. .venv/bin/python experiments/glide_inpainting/run.py --base=runs/unclip_vs_glide/glide_s0 \
      --inpaint=runs/glide_inpainting/inpaint_s0 --out=runs/glide_inpainting/s0
"""

import argparse
import dataclasses
import json
import os

import numpy as np

from t2i_jax.data import captions, shapes
from t2i_jax.eval import caption_metrics, oracle
from t2i_jax.pipelines import images as images_lib, inpaint, stage as stage_lib, text_to_image

COLUMNS = ("row", "sampler", "two_objects", "new_object", "new_color", "new_shape", "kept_object", "relation", "objects",
           "psnr_unmasked")


@dataclasses.dataclass(frozen=True)
class Task:
  """One inpainting problem: the full scene, which object is new, and the arrays built from them."""
  scene: captions.Scene
  new: int  # index of B in scene.objects
  prompt: str
  image: np.ndarray  # float32 [S, S, 3] in [-1, 1]: A alone
  mask: np.ndarray  # float32 [S, S, 1], 1 = keep
  truth: np.ndarray  # float32 [S, S, 3]: the two-object render


def make_tasks(num: int, size: int, seed: int = 0):
  """`num` Tasks from the test split's two-object scenes (examples taken in order, B alternating)."""
  tasks, index = [], 0
  while len(tasks) < num:
    scene, caption = shapes.sample_scene("test", seed, index)
    index += 1
    if len(scene.objects) != 2:
      continue
    new = len(tasks) % 2
    kept = scene.objects[1 - new]
    alone = shapes.to_float(shapes.render([kept], image_size=size))
    truth = shapes.to_float(shapes.render(scene.objects, scene.relation, image_size=size))
    obj = scene.objects[new]
    half = shapes.SIZE_SCALES[obj.size] * size + 1.0
    x, y = obj.center[0] * size, obj.center[1] * size
    box = [int(np.floor(x - half)), int(np.floor(y - half)), int(np.ceil(x + half)), int(np.ceil(y + half))]
    box = [max(box[0], 0), max(box[1], 0), min(box[2], size), min(box[3], size)]
    mask = inpaint.box_mask(size, box)[0]
    background = np.asarray(shapes.BACKGROUND_RGB, np.float32) / 127.5 - 1.0
    mask[np.abs(alone - background).max(-1) > 0.02] = 1.0  # A's pixels are known
    tasks.append(Task(scene, new, caption, alone, mask, truth))
  return tasks


def score(images, tasks, module, params) -> dict:
  """The module docstring's metrics for images [N, S, S, 3] in [-1, 1], one per task."""
  reading = oracle.read(module, params, np.asarray(images))
  target = oracle.targets([t.scene for t in tasks])
  # canonical() puts objects[1] first for "right of" and "below".
  first_is_1 = np.asarray([t.scene.relation in (1, 3) for t in tasks])
  new_slot = np.where(first_is_1, 1 - np.asarray([t.new for t in tasks]), np.asarray([t.new for t in tasks]))
  rows = np.arange(len(tasks))

  def hit(key, slot):
    return reading[key][rows, slot] == target[key][rows, slot]

  def right(slot):
    return hit("color", slot) & hit("shape", slot)

  metrics = caption_metrics.compute(reading, [t.scene for t in tasks])
  two = reading["count"] == 2
  return dict(two_objects=float(np.mean(two)), new_object=float(np.mean(two & right(new_slot))),
              new_color=float(np.mean(two & hit("color", new_slot))),
              new_shape=float(np.mean(two & hit("shape", new_slot))), kept_object=float(np.mean(right(1 - new_slot))),
              relation=metrics["binding_accuracy"], objects=metrics["objects_accuracy"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", required=True, help="the text U-Net's workdir (configs/shapes_default.py)")
  parser.add_argument("--inpaint", required=True, help="its inpainting model's workdir (configs/shapes_inpaint.py)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--num", type=int, default=200, help="scenes")
  parser.add_argument("--samplers", default="ddpm:50:3,dpm++2m:20:3", help="METHOD:STEPS:GUIDANCE, comma-separated")
  args = parser.parse_args()

  base, tuned = stage_lib.load_stage(args.base), stage_lib.load_stage(args.inpaint)
  size = base.model.image_size
  tasks = make_tasks(args.num, size)
  prompts = [t.prompt for t in tasks]
  image, mask = np.stack([t.image for t in tasks]), np.stack([t.mask for t in tasks])
  module, params = oracle.load_oracle()
  truth = np.stack([t.truth for t in tasks])
  rows = [dict(row="true two-object renders", sampler="", **score(truth, tasks, module, params),
               psnr_unmasked=float(np.mean(inpaint.unmasked_psnr(truth, image, mask))))]
  grids, samples = {}, {}  # samples: uint8 outputs of every row, kept for rescoring
  for setting in args.samplers.split(","):
    settings = text_to_image.stage_settings(base, setting)
    runs = [("replacement only (base)", lambda: inpaint.inpaint(base, image, mask, prompts, settings)),
            ("inpainting model + replacement", lambda: inpaint.inpaint(tuned, image, mask, prompts, settings)),
            ("inpainting model, conditioning only",
             lambda: inpaint.inpaint(tuned, image, mask, prompts, settings, replace=False)),
            ("text to image (base, no image)", lambda: text_to_image.generate(base, prompts, settings))]
    for name, run in runs:
      out = np.asarray(run())
      psnr = inpaint.unmasked_psnr(out, image, mask)
      rows.append(dict(row=name, sampler=setting, **score(out, tasks, module, params),
                       psnr_unmasked=float(np.mean(psnr)) if np.isfinite(psnr).all() else float("inf")))
      grids[f"{name} {setting}"] = out[:8]
      samples[f"{name} {setting}"] = images_lib.to_uint8(out)
  for row in rows:
    print(" | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS), flush=True)

  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "metrics.json"), "w") as f:
    json.dump(dict(base=args.base, inpaint=args.inpaint, base_step=base.step, inpaint_step=tuned.step,
                   num=args.num, rows=rows), f, indent=2)
  np.savez_compressed(os.path.join(args.out, "samples.npz"), **samples)
  setting = args.samplers.split(",")[0]
  cells = [image[:8], image[:8] * mask[:8]] + [grids[f"{name} {setting}"] for name, _ in runs[:3]]
  captions_ = ["input"] * 8 + ["to fill"] * 8 + [f"{name}: {p}" for name, _ in runs[:3] for p in prompts[:8]]
  images_lib.save_images(images_lib.to_uint8(np.concatenate(cells)), captions_, args.out, "inpainting", columns=8)
  print("wrote", os.path.join(args.out, "metrics.json"))


if __name__ == "__main__":
  main()
