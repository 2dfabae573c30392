"""GLIDE's inpainting model on captioned shapes: the default text U-Net fine-tuned to fill a masked region.

GLIDE §3.4: the base model's architecture with four more input channels (the masked image and the mask),
its weights copied from the trained base with the new channels' weights at zero, fine-tuned on training
images with random regions erased (half boxes, half free-form strokes; data/masks.py). It starts as the
base and learns to read the image around the hole. Train the base first:

  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo
  python -m t2i_jax.main --config=configs/shapes_inpaint.py --workdir=runs/inpaint --config.finetune.workdir=runs/demo
  python -m t2i_jax.main --config=configs/shapes_inpaint.py --workdir=runs/inpaint --mode=sample \
      --image=scene.png --box=12,0,24,12 --prompt="a large red circle above a small blue square"
  python -m t2i_jax.main --config=configs/shapes_inpaint.py:runlocal --workdir=/tmp/shapes_inpaint
"""

from configs import common, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = shapes_default.get_config("runlocal" if "runlocal" in flags else None)
  config.model.inpaint = True
  config.finetune = common.section("finetune", workdir="runs/demo")
  config.inpaint = common.section("inpaint")
  # A fifth of the base's 4,400 steps (experiments/glide_inpainting); the base's constant rate and EMA,
  # whose warmup restarts from the base's weights.
  config.train.update(dict(num_steps=1000, checkpoint_every=500, sample_every=0))
  if "runlocal" in flags:
    config.finetune.workdir = "/tmp/shapes_runlocal"  # shapes_default:runlocal's command
    config.train.update(dict(num_steps=2, checkpoint_every=2))
  return config
