"""Text → image with a text-conditional U-Net: tokenise, guide, sample (GLIDE's base stage)."""

from typing import Sequence

import jax
import jax.numpy as jnp

from t2i_jax import models
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.diffusion import guidance, samplers, schedules


def respaced_schedule(diffusion_config, method: str, steps: int):
  """(schedule, timestep_map) for sampling with `steps` steps: DDIM's integer stride when it divides
  T evenly ("ddimN"), else the reference's even sections; Karras samplers take the full schedule."""
  betas = schedules.beta_schedule(diffusion_config.schedule, diffusion_config.num_timesteps)
  if method in ("euler", "heun"):
    return schedules.make_schedule(betas), None
  spacing = f"ddim{steps}" if method == "ddim" and diffusion_config.num_timesteps % steps == 0 else str(steps)
  return schedules.respace(betas, schedules.space_timesteps(diffusion_config.num_timesteps, spacing))


def generate(model, params, diffusion_config, prompts: Sequence[str], tokenizer, context_length: int, *,
             method: str = "ddim", steps: int = 50, guidance_scale: float = 3.0, eta: float = 0.0, seed: int = 0):
  """Images [len(prompts), H, W, C] in [-1, 1] for the prompts.

  guidance_scale w: classifier-free guidance with the model's null text (w = 1: no guidance).
  """
  tokens, mask = tokenizer_lib.tokenize(tokenizer, prompts, context_length)
  cond = {"tokens": jnp.asarray(tokens), "token_mask": jnp.asarray(mask)}
  denoise = models.denoise_fn(model, params)
  if guidance_scale != 1.0:
    denoise = guidance.classifier_free(denoise, guidance_scale, model.null_condition())
  schedule, timestep_map = respaced_schedule(diffusion_config, method, steps)
  shape = (len(prompts), model.image_size, model.image_size, model.out_channels)
  return samplers.sample(
      denoise, schedule, shape, jax.random.PRNGKey(seed), method=method, mean_type=diffusion_config.mean_type,
      var_type=diffusion_config.var_type, cond=cond, timestep_map=timestep_map, eta=eta,
      num_steps=steps if method in ("euler", "heun") else None)
