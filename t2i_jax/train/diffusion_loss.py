"""The training loss of a diffusion U-Net: timestep sampling, forward noise, condition dropout, the core's losses.

A batch is dict(image [B, H, W, C] in [-1, 1], cond=dict of the U-Net's
conditioning kwargs: y, tokens/token_mask, clip_emb, context/context_mask,
low_res, ...). The loss function is pure: (params, batch, rng, loss_history, step) ->
(loss, aux) with aux holding per-example t and losses for the loss-aware sampler;
step (the optimizer step, int32 []) only matters to an early tail (`tail_fraction_at`).
A section with a `preconditioning` trains in EDM's design space instead (diffusion/edm.py): σ drawn from its
column, the network read through the preconditioning, the loss weighted by λ(σ).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import edm, gaussian, losses, timestep_sampling
from t2i_jax.diffusion.schedules import Schedule


def drop_condition(cond: dict, null: dict, drop: jax.Array) -> dict:
  """Per example (drop bool [B]), replaces each conditioning input named in `null` by its null value."""
  out = dict(cond)
  for key, null_value in null.items():
    value = cond[key]
    mask = drop.reshape((-1,) + (1,) * (value.ndim - 1))
    out[key] = jnp.where(mask, jnp.broadcast_to(null_value.astype(value.dtype), value.shape), value)
  return out


# A condition dropped as one: the caption is its tokens and their mask.
CONDITION_KEYS = {"text": ("tokens", "token_mask"), "clip_emb": ("clip_emb",), "y": ("y",)}


def drop_conditions(cond: dict, null: dict, rates: dict, key: jax.Array):
  """Drops each named condition independently: (cond, dict name -> drop bool [B]).

  rates: {name: probability} over CONDITION_KEYS' names, e.g. unCLIP's decoder
  {"clip_emb": 0.1, "text": 0.5}; null: the model's null_condition().
  """
  batch_size = jax.tree.leaves(cond)[0].shape[0]
  drops = {}
  for i, name in enumerate(sorted(rates)):
    drop = jax.random.uniform(jax.random.fold_in(key, i), (batch_size,)) < rates[name]
    cond = drop_condition(cond, {k: null[k] for k in CONDITION_KEYS[name]}, drop)
    drops[name] = drop
  return cond, drops


def check_early_tail(config) -> None:
  """Raises a ValueError unless the diffusion section's early tail (early_tail_steps, early_tail_fraction) is usable."""
  early_steps = config.early_tail_steps
  if isinstance(early_steps, bool) or not isinstance(early_steps, int) or early_steps < 0:
    raise ValueError(f"diffusion.early_tail_steps={early_steps!r} must be a non-negative int (0: no early tail).")
  if not early_steps:
    return
  sampler = config.timestep_sampler
  if sampler != "logit-normal":
    raise ValueError(f"diffusion.early_tail_steps={early_steps} sets the logit-normal sampler's tail, but "
                     f"timestep_sampler={sampler!r}; use 'logit-normal' or set early_tail_steps=0.")
  uniform = config.logit_uniform_fraction
  # Both weights reach the sampler as one traced value, which it cannot check, so both are checked here.
  for key in ("early_tail_fraction", "logit_tail_fraction"):
    value = config[key]
    if not 0.0 <= value <= 1.0 - uniform:
      raise ValueError(f"diffusion.{key}={value!r} must lie in [0, 1 − logit_uniform_fraction] = "
                       f"[0, {1.0 - uniform:g}].")


def tail_fraction_at(config, step):
  """The logit-normal tail's weight h at `step`: early_tail_fraction before early_tail_steps, then logit_tail_fraction.

  An early tail trains a fresh model mostly at the nearly-pure-noise levels, where only the caption can place
  the objects, before the middle levels (where x_t already shows the layout) take over: on captioned shapes a
  model that had not learned which object goes on which side in 22,400 steps of h = 0.25 learned it in the first
  1,600 steps of h = 0.9 (experiments/shapes_full). Returns a Python float without an early tail, else a
  float32 [] array (the sampler accepts a traced weight). step: int32 [] (the optimizer step).
  """
  tail = config.logit_tail_fraction
  if not config.early_tail_steps:
    return tail
  if step is None:
    raise ValueError("this diffusion section has an early tail (early_tail_steps > 0): call the loss with the "
                     "optimizer step, loss_fn(params, batch, rng, loss_history, step).")
  return jnp.where(jnp.asarray(step) < config.early_tail_steps, jnp.float32(config.early_tail_fraction),
                   jnp.float32(tail))


def sample_training_timesteps(config, key: jax.Array, batch_size: int, num_timesteps: int, loss_history=None,
                              step=None):
  """(t int32 [B], weights float32 [B]) from the diffusion section's timestep_sampler (and its parameters).

  config: a complete diffusion section (t2i_jax.config_keys). step (int32 []) picks the tail's weight when
  the section has an early tail.
  """
  params = {k: config[k] for k in timestep_sampling.LOGIT_NORMAL_KEYS}
  params["logit_tail_fraction"] = tail_fraction_at(config, step)
  return timestep_sampling.sample_timesteps(
      config.timestep_sampler, key, batch_size, num_timesteps, loss_history, **params)


def check_design(config, design: edm.Design, learn_sigma: bool) -> None:
  """Refuses the DDPM-only keys of a diffusion section that trains in EDM's design space."""
  where = f"diffusion.preconditioning={design.preconditioning!r}"
  if learn_sigma or config.var_type in ("learned", "learned_range"):
    raise ValueError(f"{where} trains a denoiser with one output per channel; set model.learn_sigma=False and "
                     "diffusion.var_type='fixed_small'.")
  if config.timestep_sampler != "uniform" or config.min_snr_gamma is not None or config.early_tail_fraction:
    raise ValueError(f"{where} draws σ from its own column (p_mean, p_std) and weights it by λ(σ); leave "
                     "timestep_sampler 'uniform', min_snr_gamma None and early_tail_fraction 0.")


def make_loss_fn(model, schedule: Schedule, config, *, drop_rates=None, augment=None) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux).

  config (the diffusion section): mean_type, var_type, loss_type, timestep_sampler
  ("uniform" | "loss-second-moment" | "logit-normal", with logit_mean,
  logit_std, logit_uniform_fraction, logit_tail_* and early_tail_* for the last), min_snr_gamma (None or γ),
  p_uncond (the probability of dropping the whole condition, for classifier-free guidance); or, with
  preconditioning set, EDM's design (edm.Design: sigma_data, p_mean, p_std, sigma_min, sigma_max).
  drop_rates: {condition: probability} instead of p_uncond, each condition dropped on its own
    (`drop_conditions`; unCLIP's decoder).
  augment: optional (cond, rng) -> cond run before the model (a cascade's noise-conditioning augmentation).
  """
  check_early_tail(config)
  design = edm.Design.from_config(config)
  if design is not None:
    check_design(config, design, model.learn_sigma)
  null = model.null_condition() if drop_rates or config.p_uncond > 0 else {}

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    x0 = batch["image"].astype(jnp.float32)
    batch_size = x0.shape[0]
    t_rng, noise_rng, drop_rng, dropout_rng = jax.random.split(rng, 4)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    cond = batch.get("cond", {})
    if drop_rates:
      cond, _ = drop_conditions(cond, null, drop_rates, drop_rng)
    elif null:  # one draw drops every condition together
      cond = drop_condition(cond, null, jax.random.uniform(drop_rng, (batch_size,)) < config.p_uncond)
    if augment is not None:
      # An index past drop_conditions' own keeps the augmentation's draws apart from the dropout's.
      cond = augment(cond, jax.random.fold_in(drop_rng, len(CONDITION_KEYS)))

    def network(x_in, t, cond):
      return model.apply({"params": params}, x_in, t, **cond, deterministic=False, rngs={"dropout": dropout_rng})

    if design is not None:
      sigma = edm.training_sigmas(design, t_rng, batch_size)
      per_example = edm.training_loss(network, design, x0, sigma, noise, cond)
      loss = jnp.mean(per_example)
      return loss, dict(per_example_loss=per_example, metrics=dict(loss=loss, log_sigma=jnp.mean(jnp.log(sigma))))
    t, weights = sample_training_timesteps(config, t_rng, batch_size, schedule.num_timesteps, loss_history, step)
    x_t = gaussian.q_sample(schedule, x0, t, noise)
    terms = losses.training_losses(
        schedule, network(x_t, t, cond), x0, x_t, t, noise, mean_type=config.mean_type, var_type=config.var_type,
        loss_type=config.loss_type, min_snr_gamma=config.min_snr_gamma)
    loss = jnp.mean(terms["loss"] * weights)
    aux = dict(t=t, per_example_loss=terms["loss"],
               metrics=dict(loss=loss, mse=jnp.mean(terms["mse"]), vb=jnp.mean(terms["vb"])))
    return loss, aux

  return loss_fn
