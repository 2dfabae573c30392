"""Models as the diffusion core's denoise_fn: (x_t, t, cond) -> model output."""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class _Apply:
  """model.apply as a hashable callable (params, x_t, t, cond) -> output, cond's keys as keyword arguments."""

  model: nn.Module
  channels: Optional[int] = None  # keep only the first `channels` output channels

  def __call__(self, params, x_t, t, cond):
    out = self.model.apply({"params": params}, x_t, t, **cond)
    return out if self.channels is None else out[..., :self.channels]


def denoise_fn(model: nn.Module, params, channels: Optional[int] = None) -> jax.tree_util.Partial:
  """A core denoise_fn (x_t, t, cond) for samplers.sample, with `params` as pytree leaves:
  new params (or the same model rebuilt from its config) reuse the compiled sampler.

  cond is a dict of the model's conditioning keyword arguments (a UNet's tokens,
  token_mask, y, …; the prior's text_emb, text_tokens, text_mask, drop_text).
  channels: keep only the first channels of the output, e.g. the mean half of a
  learned-variance model's [mean, variance] to sample it with a fixed variance.
  """
  return jax.tree_util.Partial(_Apply(model, channels), params)
