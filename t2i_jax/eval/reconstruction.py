"""Evaluating latent diffusion's first stage: how much of a render survives encoding and decoding.

A fixed set of test-split renders (`shapes.render_batch("test", seed, ...)`, the data's size, box-downsampled
to the autoencoder's) is reconstructed through the posterior's mean (KL) or the quantised latent (VQ). The
oracle reads originals and reconstructions; the issue's bar is that a usable autoencoder keeps ≥ 98% of
what the oracle reads, since a latent diffusion model can draw no better than its decoder.

Metrics: psnr (dB, images in [-1, 1], mean over images), original_ and reconstructed_scene_accuracy
(every attribute the oracle reads right), kept_accuracy (reconstructions read exactly as their
originals), and fid between the two sets' oracle features.
"""

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import input_pipeline, shapes
from t2i_jax.eval import fid as fid_lib, oracle as oracle_lib

COLUMNS = ("num_images", "image_size", "psnr", "original_scene_accuracy", "reconstructed_scene_accuracy",
           "kept_accuracy", "fid")


def reconstruct(stage, images: np.ndarray, batch_size: int = 100) -> np.ndarray:
  """float32 [N, S, S, C] reconstructions in [-1, 1] of images [N, S, S, C] in [-1, 1] (S = the model's size)."""
  model = stage.model
  apply = jax.jit(lambda variables, x: jnp.clip(model.apply(variables, x)[0], -1.0, 1.0))
  return np.concatenate([np.asarray(apply(stage.variables, images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)])


def evaluate(stage, num_images: int, seed: int = 0, oracle=None) -> Dict[str, float]:
  """The module docstring's metrics over `num_images` test renders of stage.config.data.image_size."""
  config, model = stage.config, stage.model
  images, _, scenes = shapes.render_batch("test", seed, 0, num_images, image_size=config.data.image_size)
  factor = config.data.image_size // model.resolution
  images = shapes.to_float(images)
  images = images if factor == 1 else input_pipeline.downsample(images, factor)
  recon = reconstruct(stage, images)
  module, params = oracle or oracle_lib.load_oracle()
  target = oracle_lib.targets(scenes)
  before, after = oracle_lib.read(module, params, images), oracle_lib.read(module, params, recon)
  same = np.ones(num_images, bool)
  for key in before:
    same &= np.all((before[key] == after[key]).reshape(num_images, -1), axis=1)
  mse = np.mean((recon - images) ** 2, axis=(1, 2, 3))
  features = [oracle_lib.features(module, params, x) for x in (images, recon)]
  return dict(num_images=num_images, image_size=int(images.shape[1]),
              psnr=float(np.mean(10.0 * np.log10(4.0 / np.maximum(mse, 1e-10)))),
              original_scene_accuracy=oracle_lib.attribute_accuracy(before, target)["scene"],
              reconstructed_scene_accuracy=oracle_lib.attribute_accuracy(after, target)["scene"],
              kept_accuracy=float(np.mean(same)), fid=fid_lib.fid_from_features(features[1], features[0]))
