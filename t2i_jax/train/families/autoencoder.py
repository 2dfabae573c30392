"""Latent diffusion's first stage: the KL and VQ autoencoders, trained by autoencoder_loss on images alone."""

from typing import Optional

from t2i_jax import config_keys
from t2i_jax.data import input_pipeline
from t2i_jax.train import autoencoder_loss, frozen_autoencoder
from t2i_jax.train.families import base


class AutoencoderFamily(base.Family):
  """models.AutoencoderKL or VQModel; every checkpoint stores the latent scale later stages read."""

  evaluation = "reconstructions"

  def __init__(self, name: str):
    self.name = name

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    del workdir
    if config.data.image_size % model.resolution:
      raise ValueError(f"data.image_size={config.data.image_size} is not a multiple of model.resolution="
                       f"{model.resolution}; the autoencoder trains on the data's images box-downsampled to its "
                       "size.")
    factor = config.data.image_size // model.resolution

    def model_batch(batch):
      return {"image": batch["image"] if factor == 1 else input_pipeline.downsample(batch["image"], factor)}

    return base.Task(model, autoencoder_loss.make_loss_fn(model, config_keys.section_of(config, "autoencoder")),
                     model_batch, checkpoint_extra=frozen_autoencoder.latent_scale_extra(model))


KL = AutoencoderFamily("autoencoder_kl")
VQ = AutoencoderFamily("autoencoder_vq")
