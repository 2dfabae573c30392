"""The noisy classifier (guided diffusion): cross-entropy on x_t, its gradient guides a U-Net's sampling."""

from typing import Optional

from t2i_jax.train import classifier_loss
from t2i_jax.train.families import base, unet


class ClassifierFamily(base.Family):
  """models.NoisyClassifier trained by classifier_loss on (image, label) batches."""

  name = "classifier"

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    del workdir
    schedule = base.build_schedule(config.diffusion)
    return base.Task(model, classifier_loss.make_loss_fn(model, schedule),
                     lambda batch: {"image": batch["image"], "cond": {"y": base.labels(batch, config.data)}},
                     schedule)

  def runlocal_model(self, model_config, image_size: int) -> dict:
    return unet.FAMILY.runlocal_model(model_config, image_size)  # ADM's encoder half shrinks as its U-Net


FAMILY = ClassifierFamily()
