"""CLIP: the symmetric contrastive loss on (image, caption) batches; noised (GLIDE) when timestep-conditioned."""

from typing import Optional

from t2i_jax.train import clip_loss
from t2i_jax.train.families import base


class ClipFamily(base.Family):
  """models.CLIP trained by clip_loss; --mode=eval ranks captions zero-shot (eval.clip_eval)."""

  name = "clip"
  evaluation = "ranking"

  def reads_text(self, model_config) -> bool:
    return True

  def check_text(self, config, tokenizer) -> None:
    base.check_vocabulary(config, tokenizer, config.model.vocab_size, config.model.text_ctx, "model", "text_ctx")

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    del workdir
    schedule = base.build_schedule(config.diffusion) if model.timestep_conditioned else None
    return base.Task(model, clip_loss.make_loss_fn(model, schedule),
                     lambda batch: {"image": batch["image"], "cond": base.text_inputs(batch)}, schedule)


FAMILY = ClipFamily()
