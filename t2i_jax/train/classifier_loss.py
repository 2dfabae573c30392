"""The training loss of a noisy classifier (guided diffusion, Dhariwal & Nichol 2021, §4).

The classifier learns p(y | x_t, t) on images noised by the forward process at a
uniformly drawn timestep, so that its gradient can steer sampling at every step.
A batch is dict(image [B, H, W, C] in [-1, 1], cond=dict(y int [B])).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion.schedules import Schedule


def make_loss_fn(model, schedule: Schedule) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux): softmax cross-entropy on x_t.

  aux["metrics"]: loss, accuracy (top-1) and loss_q0..loss_q3, the loss of the
  examples whose t falls in each quarter of [0, T) (guided-diffusion logs the
  same split: accuracy drops as t approaches T, where x_t holds little signal).
  """

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    del loss_history, step  # the classifier always samples t uniformly
    x0 = batch["image"].astype(jnp.float32)
    labels = batch["cond"]["y"]
    t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
    t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_timesteps)
    x_t = gaussian.q_sample(schedule, x0, t, jax.random.normal(noise_rng, x0.shape, x0.dtype))
    logits = model.apply({"params": params}, x_t, t, deterministic=False, rngs={"dropout": dropout_rng})
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    loss = jnp.mean(per_example)
    metrics = dict(loss=loss, accuracy=jnp.mean(jnp.argmax(logits, -1) == labels))
    quarter = t * 4 // schedule.num_timesteps
    for q in range(4):
      in_q = quarter == q
      metrics[f"loss_q{q}"] = jnp.sum(per_example * in_q) / jnp.maximum(jnp.sum(in_q), 1)
    return loss, dict(t=t, per_example_loss=per_example, metrics=metrics)

  return loss_fn
