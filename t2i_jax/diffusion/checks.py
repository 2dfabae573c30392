"""Argument checks shared by the diffusion core.

Every check raises a ValueError that names the argument, what it got and what it
accepts, so that a typo in a config fails at once with the fix in the message.
"""

from typing import Iterable

import jax
import numpy as np

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
LEARNED_VAR_TYPES = ("learned", "learned_range")


def check_choice(arg_name: str, value, allowed: Iterable[str]) -> str:
  """Returns `value` if it is one of `allowed`, else raises a ValueError."""
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(
        f"{arg_name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}."
    )
  return value


def check_types(mean_type: str, var_type: str) -> None:
  """Validates a (mean_type, var_type) parameterisation."""
  check_choice("mean_type", mean_type, MEAN_TYPES)
  check_choice("var_type", var_type, VAR_TYPES)


def concrete_or_none(x):
  """`x` as a numpy array when its value is known now, None inside a trace."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_timesteps(t, num_timesteps: int, arg_name: str = "t") -> None:
  """Raises a ValueError if a concrete `t` holds an index outside [0, num_timesteps).

  Inside jit the values are unknown, so nothing is checked there; the eager call
  that usually precedes a jitted one (and every test) catches the mistake.
  """
  values = concrete_or_none(t)
  if values is None or values.size == 0:
    return
  if not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f"{arg_name} must hold integer timestep indices, got dtype {values.dtype}.")
  lo, hi = int(values.min()), int(values.max())
  if lo < 0 or hi >= num_timesteps:
    raise ValueError(
        f"{arg_name} holds timesteps in [{lo}, {hi}] but the schedule has "
        f"{num_timesteps} steps; valid indices are 0..{num_timesteps - 1}."
    )


def check_model_output(model_output, x_t, var_type: str) -> None:
  """Checks that the model output has C channels (fixed variance) or 2C (learned)."""
  channels = x_t.shape[-1]
  want = 2 * channels if var_type in LEARNED_VAR_TYPES else channels
  if model_output.shape[:-1] != x_t.shape[:-1] or model_output.shape[-1] != want:
    kind = "mean then variance channels" if want == 2 * channels else "mean channels only"
    raise ValueError(
        f"model_output has shape {tuple(model_output.shape)} but x_t has shape "
        f"{tuple(x_t.shape)}: var_type={var_type!r} needs {want} channels ({kind}) "
        f"with the same leading dimensions as x_t."
    )
