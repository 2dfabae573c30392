"""Fine-tuning: a run whose params start from another run's, as GLIDE's inpainting model starts from its base.

The config's `finetune` section names the base's workdir. A fresh run's params are the base's (its EMA
copy by default) leaf for leaf; the one change allowed is more input channels in the U-Net's first conv
(an inpainting model's masked image and mask), whose new weights start at zero, so the fine-tuned model
begins as exactly the base and learns to read the new inputs. The optimizer state and EMA start afresh
at step 0. A run that resumes from its own checkpoint does not read the base again.
"""

from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax import models
from t2i_jax.train import checkpoint

INPUT_KERNEL = ("input_conv", "kernel")  # the first conv, whose input channels may grow
_SAME_DIFFUSION = ("schedule", "num_timesteps", "mean_type", "var_type")


def check_base(config):
  """The base run's config, checked against `config` (a ValueError naming both sides if they cannot meet).

  The base must be a U-Net of the same family, diffusion process and tokenizer.
  """
  workdir = config.finetune.workdir
  base = checkpoint.read_config(workdir)
  if base.model.name != config.model.name:
    raise ValueError(f"finetune.workdir={workdir} holds a {base.model.name!r} model but this config trains a "
                     f"{config.model.name!r}; point it at a run of the same model family.")
  if config.get("diffusion") is not None:
    for key in _SAME_DIFFUSION:
      if base.diffusion[key] != config.diffusion[key]:
        raise ValueError(f"finetune.workdir={workdir} was trained with diffusion.{key}={base.diffusion[key]!r} "
                         f"but this config has {config.diffusion[key]!r}; fine-tune on the base's process.")
  if base.data.tokenizer != config.data.tokenizer:
    raise ValueError(f"finetune.workdir={workdir} was trained with tokenizer {base.data.tokenizer!r} but this "
                     f"config uses {config.data.tokenizer!r}; use the base's tokenizer.")
  return base


def graft_input_kernel(kernel: np.ndarray, base_model, model, shape) -> np.ndarray:
  """The base's first-conv kernel [kh, kw, p·p·C_base, F] widened to `shape` [kh, kw, p·p·C, F]: each input
  part the base has (x_t, pixel coordinates, …) keeps its weights, each new part (inpaint_image,
  inpaint_mask) gets zeros. Parts are named by the U-Nets' `input_layout`; space-to-depth puts a patch's
  p·p positions outermost, so the channels of each position are grafted alike."""
  if base_model.patch_size != model.patch_size:
    raise ValueError(f"the base U-Net has patch_size={base_model.patch_size} and this one {model.patch_size}; "
                     "fine-tuning keeps the patch size.")
  base_parts = dict(base_model.input_layout)
  unknown = sorted(set(base_parts) - set(dict(model.input_layout)))
  if unknown:
    raise ValueError(f"the base U-Net reads input(s) {unknown} that this one does not; fine-tuning may only add "
                     "input channels.")
  positions = model.patch_size ** 2
  base_offsets, start = {}, 0
  for name, width in base_model.input_layout:
    base_offsets[name] = start
    start += width
  old = np.asarray(kernel).reshape(kernel.shape[:2] + (positions, base_model.input_channels) + kernel.shape[-1:])
  new = np.zeros(kernel.shape[:2] + (positions, model.input_channels) + kernel.shape[-1:], old.dtype)
  start = 0
  for name, width in model.input_layout:
    if name in base_offsets:
      new[..., start:start + width, :] = old[..., base_offsets[name]:base_offsets[name] + width, :]
    start += width
  return new.reshape(shape)


def graft(base_params, base_model, model, abstract_params) -> Any:
  """`abstract_params`' tree (shapes and dtypes) filled from base_params (see the module docstring).

  Raises a ValueError naming the first leaves that differ other than the first conv's input channels.
  """
  base_flat = flax.traverse_util.flatten_dict(jax.device_get(base_params))
  flat = flax.traverse_util.flatten_dict(abstract_params)
  missing, extra = sorted(set(flat) - set(base_flat)), sorted(set(base_flat) - set(flat))
  if missing or extra:
    name = lambda paths: ", ".join("/".join(p) for p in paths[:3])
    raise ValueError(f"the base's params differ from this model's: {'missing ' + name(missing) if missing else ''}"
                     f"{'; ' if missing and extra else ''}{'unexpected ' + name(extra) if extra else ''}; fine-tune "
                     "from a run of the same architecture (only the first conv's input channels may grow).")
  out = {}
  for path, leaf in flat.items():
    value = np.asarray(base_flat[path])
    if value.shape != leaf.shape:
      if path != INPUT_KERNEL:
        raise ValueError(f"the base's {'/'.join(path)} has shape {value.shape} but this model's is {leaf.shape}; "
                         "fine-tune from a run of the same architecture (only the input channels may grow).")
      value = graft_input_kernel(value, base_model, model, leaf.shape)
    out[path] = jnp.asarray(value, leaf.dtype)
  return flax.traverse_util.unflatten_dict(out)


def base_params(config, model, abstract_params) -> Any:
  """The fresh run's initial params: the base's (config.finetune) grafted onto this model's shapes."""
  base_config = check_base(config)
  base_model = models.build(base_config.model)
  _, params, step = checkpoint.load_params(base_config, config.finetune.workdir, config.finetune.use_ema)
  print(f"fine-tuning from {config.finetune.workdir} (step {step}, {'EMA' if config.finetune.use_ema else 'raw'} "
        "params)", flush=True)
  return graft(params, base_model, model, abstract_params)
