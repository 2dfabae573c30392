"""The image autoencoders, trained on images alone: latent diffusion's KL and VQ first stages, and DALL·E's
discrete VAE."""

from typing import Optional

from t2i_jax import config_keys
from t2i_jax.data import input_pipeline
from t2i_jax.train import autoencoder_loss, dvae_loss, frozen_autoencoder
from t2i_jax.train.families import base


class AutoencoderFamily(base.Family):
  """models.AutoencoderKL or VQModel; every checkpoint stores the latent scale later stages read."""

  evaluation = "reconstructions"

  def __init__(self, name: str):
    self.name = name

  def loss(self, config, model):
    return autoencoder_loss.make_loss_fn(model, config_keys.section_of(config, "autoencoder"))

  def checkpoint_extra(self, model):
    return frozen_autoencoder.latent_scale_extra(model)

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    del workdir
    if config.data.image_size % model.resolution:
      raise ValueError(f"data.image_size={config.data.image_size} is not a multiple of model.resolution="
                       f"{model.resolution}; the autoencoder trains on the data's images box-downsampled to its "
                       "size.")
    factor = config.data.image_size // model.resolution

    def model_batch(batch):
      return {"image": batch["image"] if factor == 1 else input_pipeline.downsample(batch["image"], factor)}

    return base.Task(model, self.loss(config, model), model_batch, checkpoint_extra=self.checkpoint_extra(model))


class DiscreteVAEFamily(AutoencoderFamily):
  """models.DiscreteVAE trained by dvae_loss (config section dvae); its codes are DALL·E's image tokens."""

  def loss(self, config, model):
    return dvae_loss.make_loss_fn(model, config_keys.section_of(config, "dvae"))

  def checkpoint_extra(self, model):
    return None  # its codes, not a continuous latent, are what later stages read


KL = AutoencoderFamily("autoencoder_kl")
VQ = AutoencoderFamily("autoencoder_vq")
DVAE = DiscreteVAEFamily("dvae")
