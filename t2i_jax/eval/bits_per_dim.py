"""Bits/dim of a trained diffusion U-Net over a dataset: the full variational bound (Improved DDPM §2.3).

Every test image runs through all T timesteps of `losses.calc_bpd` (one jitted
scan per batch) and the prior term; the mean over images is the number papers
report (iDDPM CIFAR-10 L_hybrid: 2.94 at T = 4000).
"""

import itertools

import jax

from t2i_jax import models
from t2i_jax.data import input_pipeline
from t2i_jax.diffusion import losses
from t2i_jax.train import families


def dataset_bits_per_dim(stage, *, split: str = "test", num_examples: int = 1000, batch_size: int = 100,
                         seed: int = 0) -> dict:
  """dict(bpd, prior_bpd, vb_per_t [T], num_examples) of the first num_examples of the stage's data split.

  stage: a diffusion U-Net (`pipelines.stage.load_stage`). It is conditioned as in
  training (tokens, labels or low-res image), by its family's batch
  conversion; the split is read in order, unshuffled.
  """
  config = stage.config
  task = families.make_task(config)
  source = input_pipeline.make_source(config.data, split)
  iterator = input_pipeline.create_iterator(
      source, batch_size=batch_size, seed=seed, shuffle=False, num_epochs=1, tokenizer=stage.tokenizer,
      context_length=config.data.context_length, image_size=config.data.image_size, num_threads=0)
  batches = (task.model_batch(b) for b in itertools.islice(iterator, max(1, num_examples // batch_size)))
  return losses.dataset_bpd(models.denoise_fn(stage.model, stage.params), task.schedule, batches,
                            jax.random.PRNGKey(seed), mean_type=config.diffusion.mean_type,
                            var_type=config.diffusion.var_type)
