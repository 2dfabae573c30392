"""Helpers shared by the experiment configs: argument parsing and the CPU-test shrink."""

import ml_collections

RUNLOCAL_MODEL = dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), num_head_channels=16, dropout=0.0)


def parse_arg(arg, allowed=("runlocal",)):
  """The config argument as a set of flags; raises a ValueError on an unknown one."""
  flags = set(filter(None, (arg or "").split(",")))
  unknown = sorted(flags - set(allowed))
  if unknown:
    raise ValueError(f"config argument(s) {unknown} not understood; this config accepts {sorted(allowed)}.")
  return flags


def shrink_for_cpu(config: ml_collections.ConfigDict, image_size: int = 16) -> None:
  """`:runlocal`: the same model family at a size that trains two steps on a CPU in seconds."""
  config.model.update({k: v for k, v in RUNLOCAL_MODEL.items() if k in config.model})
  config.model.image_size = image_size
  config.model.attention_resolutions = (image_size // 2,)
  if config.model.get("text") is not None:
    config.model.text.update(dict(context_length=16, width=32, layers=1, heads=2, vocab_size=64))
  config.diffusion.num_timesteps = 100
