"""The pure train step: (state, batch, rng) -> (state, metrics), for any model family's loss.

The step folds the step number into the rng (a resumed run draws the same
numbers), optionally accumulates gradients over micro-batches, applies the
optimizer, the EMA and the loss-aware sampler's update, and reports whether the
loss and gradients were finite. `jit_train_step` compiles it on a mesh with the
batch sharded over every device and the state donated.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from t2i_jax.diffusion import timestep_sampling
from t2i_jax.train import posthoc_ema, sharding
from t2i_jax.train.state import TrainState, ema_decay, ema_update


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *, ema_rate: float = 0.9999,
                    ema_warmup: bool = True, grad_accum_steps: int = 1, posthoc_gammas: tuple = ()) -> Callable:
  """Builds train_step(state, batch, rng) -> (state, metrics).

  loss_fn(params, batch, rng, loss_history, step) -> (loss, aux) with aux["metrics"]
  (scalars) and, for the loss-aware sampler, aux["t"] and aux["per_example_loss"]; step is the
  state's (int32 [], before the update), for losses whose sampling changes over training.
  With grad_accum_steps = k the batch is split into k micro-batches along its
  leading axis and their gradients averaged (one optimizer update).
  A state with model_state (the model's non-param variables, e.g. an EMA codebook) passes it to the
  loss as the keyword model_state=, and the loss returns the updated variables as aux["model_state"],
  which become the new state's: with k micro-batches, each one's update is the next one's input (the
  codebook moves k times, once per micro-batch, as k smaller steps would move it). A state without
  it calls the loss exactly as before.
  posthoc_gammas: the exponents of the state's power-function EMA profiles (posthoc_ema.gamma_of).
  metrics: the loss's, grad_norm, and finite (bool []: loss and gradients finite).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def micro_step(params, batch, rng, history, step, model_state):
    extra = {} if model_state is None else {"model_state": model_state}
    (_, aux), grads = grad_fn(params, batch, rng, history, step, **extra)
    if model_state is not None and "model_state" not in aux:
      raise ValueError("the state holds model_state (the model's non-param variables) but the loss returned no "
                       'aux["model_state"]; a loss for such a model must return its updated variables.')
    return grads, aux

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    model_state = state.model_state
    if grad_accum_steps == 1:
      grads, aux = micro_step(state.params, batch, rng, state.loss_history, state.step, model_state)
      if model_state is not None:
        model_state = aux.pop("model_state")
    else:
      micro = jax.tree.map(lambda x: x.reshape((grad_accum_steps, -1) + x.shape[1:]), batch)

      def body(carry, inputs):
        acc, variables = carry
        i, mb = inputs
        grads, aux = micro_step(state.params, mb, jax.random.fold_in(rng, i), state.loss_history, state.step,
                                variables)
        if variables is not None:
          variables = aux.pop("model_state")
        return (jax.tree.map(jnp.add, acc, grads), variables), aux

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, model_state), aux = jax.lax.scan(body, (zeros, model_state), (jnp.arange(grad_accum_steps), micro))
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
      flat = {k: aux[k].reshape(-1) for k in ("t", "per_example_loss") if k in aux}
      aux = dict(flat, metrics=jax.tree.map(jnp.mean, aux["metrics"]))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(state.ema_params, params, ema_decay(state.step, ema_rate, ema_warmup))
    posthoc = state.posthoc_ema
    if posthoc is not None:
      posthoc = posthoc_ema.update(posthoc, params, state.step, posthoc_gammas)
    history = state.loss_history
    if history is not None:
      history = timestep_sampling.update_loss_history(history, aux["t"], aux["per_example_loss"])
    grad_norm = optax.tree.norm(grads)
    # Reported, not acted on: the loop stops at a non-finite step and never saves its state.
    finite = jnp.isfinite(aux["metrics"]["loss"]) & jnp.isfinite(grad_norm)
    metrics = dict(aux["metrics"], grad_norm=grad_norm, finite=finite)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state,
                              loss_history=history, model_state=model_state, posthoc_ema=posthoc)
    return new_state, metrics

  return train_step


def jit_train_step(train_step: Callable, state: TrainState, mesh) -> Callable:
  """train_step compiled for `mesh`: state sharded as sharding.state_sharding, batch split over
  every device, rng replicated, the old state's buffers donated."""
  state_shardings = sharding.state_sharding(state, mesh)
  return jax.jit(
      train_step,
      in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=0,
  )
