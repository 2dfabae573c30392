"""unCLIP's diffusion prior: caption -> CLIP image embedding, on a frozen CLIP's embeddings and token states."""

from typing import Optional

import jax

from t2i_jax.train import frozen_clip, prior_loss
from t2i_jax.train.families import base


class PriorFamily(base.Family):
  """models.DiffusionPrior trained by prior_loss; the frozen CLIP of prior.clip_workdir embeds each batch."""

  name = "prior"

  def reads_text(self, model_config) -> bool:
    return True  # through the frozen CLIP, whose tokenizer frozen_clip.check_matches checks

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    del workdir
    schedule = base.build_schedule(config.diffusion)
    if config.get("prior") is None:
      raise ValueError("a prior trains on a frozen CLIP's embeddings: set prior.clip_workdir to a CLIP's workdir "
                       "(configs/shapes_clip.py).")
    clip_model, clip_params, _ = frozen_clip.load(config.prior.clip_workdir, config, "prior")
    embed = jax.jit(frozen_clip.make_prior_embed_fn(clip_model))
    return base.Task(model, prior_loss.make_loss_fn(model, schedule, config.diffusion),
                     lambda batch: {"image": batch["image"], "cond": base.text_inputs(batch)}, schedule, embed,
                     clip_params)


FAMILY = PriorFamily()
