"""Images from a U-Net: tokenise (or take labels / low-resolution images), guide, sample (GLIDE's stages)."""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from t2i_jax import models
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.diffusion import checks, guidance, samplers, schedules


def respaced_schedule(diffusion_config, method: str, steps: int, min_timestep: int = 0):
  """(schedule, timestep_map) for sampling with `steps` steps: DDIM's integer stride when it divides
  the span evenly ("ddimN"), else the reference's even sections; Karras samplers take the full schedule.

  min_timestep: the steps are spread over original timesteps [min_timestep, T) rather than [0, T).
    The respaced process then starts at ᾱ(min_timestep), so the sampler's last step goes from
    min_timestep straight to the clean image with the model's x0 prediction there, and the model
    is never asked about the least noisy levels (a model trained with few draws there, e.g.
    narrow logit-normal timesteps, adds noise at them instead of removing it).
  """
  num_timesteps = diffusion_config.num_timesteps
  betas = schedules.beta_schedule(diffusion_config.schedule, num_timesteps)
  if method in ("euler", "heun"):
    if min_timestep:
      raise ValueError(f"min_timestep={min_timestep}: the Karras samplers ({method}) run the full noise schedule; "
                       "use min_timestep=0 with them, or ddim / dpm++2m / ddpm.")
    return schedules.make_schedule(betas), None
  span = num_timesteps - min_timestep
  if min_timestep < 0 or span < steps:
    raise ValueError(f"min_timestep={min_timestep} must lie in [0, T − steps] = [0, {num_timesteps - steps}] "
                     f"for {steps} steps of a {num_timesteps}-step process.")
  spacing = f"ddim{steps}" if method == "ddim" and span % steps == 0 else str(steps)
  return schedules.respace(betas, min_timestep + schedules.space_timesteps(span, spacing))


def sample_unet(model, params, diffusion_config, cond: dict, num: int, *, method: str = "ddim", steps: int = 50,
                guidance_scale: float = 1.0, eta: float = 0.0, seed: int = 0, grad_fn=None,
                var_type: Optional[str] = None, min_timestep: int = 0):
  """Images [num, H, W, C] in [-1, 1] from a U-Net given its conditioning kwargs.

  Args:
    cond: the U-Net's conditioning inputs with leading axis `num` (tokens and
      token_mask, y, low_res, ...); {} for an unconditional model.
    guidance_scale: classifier-free guidance scale w with the model's null
      condition (w = 1: no guidance; a model without a null condition refuses w != 1).
    grad_fn: optional classifier guidance, (x_t, t, cond) -> scaled ∇ log p(y | x_t)
      (models.classifier.classifier_grad_fn), cond holding the target classes "y".
    var_type: the reverse-step variance (default the training config's); "fixed_small" or
      "fixed_large" with a learned-variance model drops its variance output (Improved DDPM's
      learned vs fixed comparison on one network). Only the ancestral sampler uses it.
    min_timestep: the lowest original timestep the sampler visits (see respaced_schedule).
  """
  var_type = var_type or diffusion_config.var_type
  checks.check_choice("var_type", var_type, checks.VAR_TYPES)
  learned = diffusion_config.var_type in checks.LEARNED_VAR_TYPES
  if var_type in checks.LEARNED_VAR_TYPES and not learned:
    raise ValueError(f"var_type={var_type!r} needs a model trained with learned variance; this one was trained "
                     f"with {diffusion_config.var_type!r}: sample with 'fixed_small' or 'fixed_large'.")
  drop_variance = learned and var_type not in checks.LEARNED_VAR_TYPES
  denoise = models.denoise_fn(model, params, channels=model.out_channels if drop_variance else None)
  if guidance_scale != 1.0:
    denoise = guidance.classifier_free(denoise, guidance_scale, model.null_condition())
  schedule, timestep_map = respaced_schedule(diffusion_config, method, steps, min_timestep)
  shape = (num, model.image_size, model.image_size, model.out_channels)
  return samplers.sample(
      denoise, schedule, shape, jax.random.PRNGKey(seed), method=method, mean_type=diffusion_config.mean_type,
      var_type=var_type, cond={k: jnp.asarray(v) for k, v in cond.items()},
      timestep_map=timestep_map, eta=eta, num_steps=steps if method in ("euler", "heun") else None,
      grad_fn=grad_fn)


def text_cond(prompts: Sequence[str], tokenizer, context_length: int, extra: Optional[dict] = None) -> dict:
  """The U-Net's text conditioning for prompts: tokens int32 [N, L], token_mask bool [N, L] (+ `extra`)."""
  tokens, mask = tokenizer_lib.tokenize(tokenizer, prompts, context_length)
  return dict(extra or {}, tokens=tokens, token_mask=mask)


def generate(model, params, diffusion_config, prompts: Sequence[str], tokenizer, context_length: int, *,
             method: str = "ddim", steps: int = 50, guidance_scale: float = 3.0, eta: float = 0.0, seed: int = 0,
             var_type: Optional[str] = None, min_timestep: int = 0):
  """Images [len(prompts), H, W, C] in [-1, 1] for the prompts (a text-conditional U-Net).

  guidance_scale w: classifier-free guidance with the model's null text (w = 1: no guidance).
  var_type, min_timestep: see sample_unet.
  """
  return sample_unet(model, params, diffusion_config, text_cond(prompts, tokenizer, context_length), len(prompts),
                     method=method, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed, var_type=var_type,
                     min_timestep=min_timestep)
