"""The training loss of CLIP: the symmetric contrastive loss over the global batch.

A batch is dict(image [B, H, W, 3] in [-1, 1], cond=dict(tokens int [B, L],
token_mask bool [B, L])). For GLIDE's noised CLIP (model.timestep_conditioned),
the image tower sees x_t at a uniform timestep of `schedule`, so that CLIP
guidance can read noisy samples.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion.schedules import Schedule
from t2i_jax.models import clip


def make_loss_fn(model, schedule: Optional[Schedule] = None) -> Callable:
  """Builds loss_fn(params, batch, rng, loss_history=None, step=None) -> (loss, aux).

  aux["metrics"]: loss, image_to_text_accuracy (top-1 retrieval of each image's
  caption within the batch) and temperature (exp(logit_scale), clipped at 100).
  """
  if model.timestep_conditioned and schedule is None:
    raise ValueError("a timestep-conditioned (noised) CLIP needs the diffusion schedule; add a diffusion section.")

  def loss_fn(params, batch, rng, loss_history=None, step=None):
    del loss_history, step
    images = batch["image"].astype(jnp.float32)
    t = None
    if model.timestep_conditioned:
      t_rng, noise_rng = jax.random.split(rng)
      t = jax.random.randint(t_rng, (images.shape[0],), 0, schedule.num_timesteps)
      images = gaussian.q_sample(schedule, images, t, jax.random.normal(noise_rng, images.shape))
    cond = batch["cond"]
    image_emb, text_emb, logit_scale = model.apply(
        {"params": params}, clip.normalize_images(images), cond["tokens"], t,
        clip.eot_index_from_mask(cond["token_mask"]))
    loss = clip.contrastive_loss(image_emb, text_emb, logit_scale)
    similarity = clip.l2_normalize(image_emb) @ clip.l2_normalize(text_emb).T
    accuracy = jnp.mean(jnp.argmax(similarity, axis=1) == jnp.arange(images.shape[0]))
    metrics = dict(loss=loss, image_to_text_accuracy=accuracy,
                   temperature=jnp.minimum(jnp.exp(logit_scale), 100.0))
    return loss, dict(metrics=metrics)

  return loss_fn
