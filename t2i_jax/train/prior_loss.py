"""The training loss of the unCLIP prior (Ramesh et al., 2022, §2.2).

The prior learns p(z_i | y): the CLIP image embedding z_i of an image given its
caption y's CLIP text embedding and per-token text states. Its batch holds what
a frozen CLIP computed from (image, tokens) on the devices before each step
(train.frozen_clip.make_prior_embed_fn).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import gaussian, losses
from t2i_jax.diffusion.schedules import Schedule
from t2i_jax.models import clip
from t2i_jax.train import diffusion_loss


def make_loss_fn(model, schedule: Schedule, config) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux) for the embedded batch.

  config (the diffusion section): mean_type ("x0" in the paper), var_type,
  loss_type, timestep_sampler (as in diffusion_loss), min_snr_gamma, p_uncond
  (the probability of replacing the text by the learned null text, for
  classifier-free guidance).
  """
  diffusion_loss.check_early_tail(config)

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    z0 = batch["image_emb"]
    t_rng, noise_rng, drop_rng, dropout_rng = jax.random.split(rng, 4)
    t, weights = diffusion_loss.sample_training_timesteps(config, t_rng, z0.shape[0], schedule.num_timesteps,
                                                          loss_history, step)
    noise = jax.random.normal(noise_rng, z0.shape)
    z_t = gaussian.q_sample(schedule, z0, t, noise)
    cond = dict(batch["cond"], drop_text=jax.random.uniform(drop_rng, (z0.shape[0],)) < config.p_uncond)
    output = model.apply({"params": params}, z_t, t, **cond, deterministic=False, rngs={"dropout": dropout_rng})
    terms = losses.training_losses(schedule, output, z0, z_t, t, noise, mean_type=config.mean_type,
                                   var_type=config.var_type, loss_type=config.loss_type,
                                   min_snr_gamma=config.min_snr_gamma)
    loss = jnp.mean(terms["loss"] * weights)
    pred = output if config.mean_type == "x0" else gaussian.p_mean_variance(
        schedule, output, z_t, t, mean_type=config.mean_type, var_type=config.var_type,
        clip_denoised=False)["pred_x0"]
    metrics = dict(loss=loss, mse=jnp.mean(terms["mse"]),
                   cosine_to_target=jnp.mean(clip.cosine_similarity(pred, z0)))
    return loss, dict(t=t, per_example_loss=terms["loss"], metrics=metrics)

  return loss_fn
