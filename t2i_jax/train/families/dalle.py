"""DALL·E's transformer: autoregressive cross-entropy on [caption ; image tokens] of a frozen tokenizer.

The tokenizer (a dVAE, configs/shapes_dvae.py, or a VQ model, configs/shapes_autoencoder.py:vq, named by
transformer.tokenizer_workdir) encodes
each batch's images to codes on the devices before the step, as the decoder's frozen CLIP does; it is never
retrained, and its codebook size and grid must be the transformer's image_vocab and image_side.
"""

from typing import Optional

import jax

from t2i_jax import config_keys, models
from t2i_jax.train import checkpoint, dalle_loss
from t2i_jax.train.families import base


def load_tokenizer(config):
  """(model, variables, its config) of transformer.tokenizer_workdir's image tokenizer (EMA params), checked against
  the transformer's config with one-line errors."""
  section = config_keys.section_of(config, "transformer")
  workdir = section.tokenizer_workdir
  tok_config = checkpoint.read_config(workdir)
  if models.module_class(tok_config.model) not in models.IMAGE_TOKENIZERS:
    raise ValueError(f"transformer.tokenizer_workdir={workdir} holds no image tokenizer (a dVAE or a VQ model); "
                     "point it at a workdir of configs/shapes_dvae.py or configs/shapes_autoencoder.py:vq.")
  model_config, tok = config.model, tok_config.model
  side = models.build(tok).latent_shape[0]
  if (model_config.image_vocab, model_config.image_side) != (tok.n_embed, side):
    raise ValueError(f"the tokenizer in {workdir} has {tok.n_embed} codes on a {side}×{side} grid but the "
                     f"transformer has image_vocab={model_config.image_vocab}, image_side={model_config.image_side}; "
                     f"set them to {tok.n_embed} and {side}.")
  if config.data.image_size != tok.resolution:
    raise ValueError(f"the tokenizer in {workdir} reads {tok.resolution}px images but data.image_size="
                     f"{config.data.image_size}; set data.image_size={tok.resolution}.")
  model, params, model_state, _ = checkpoint.load_variables(tok_config, workdir)
  return model, {"params": params, **(model_state or {})}, tok_config


class DalleFamily(base.Family):
  """models.DalleTransformer trained by dalle_loss on a frozen tokenizer's codes."""

  name = "dalle"

  def reads_text(self, model_config) -> bool:
    return True

  def check_text(self, config, tokenizer) -> None:
    base.check_vocabulary(config, tokenizer, config.model.text_vocab, config.model.text_len, "model", "text_len")

  def task(self, config, model, workdir: Optional[str]) -> base.Task:
    del workdir
    if config.get("transformer") is None:
      raise ValueError("a DALL·E transformer trains on a frozen tokenizer's codes: set "
                       "transformer.tokenizer_workdir (configs/shapes_dalle.py).")
    section = config.transformer
    tok_model, tok_variables, _ = load_tokenizer(config)

    def embed(variables, batch):
      codes = tok_model.apply(variables, batch.pop("image"), method="encode_indices")
      return dict(batch, image_tokens=codes.reshape(codes.shape[0], -1))

    return base.Task(model, dalle_loss.make_loss_fn(model, section.text_loss_weight, section.p_drop_text),
                     lambda batch: {"image": batch["image"], "cond": base.text_inputs(batch)}, None,
                     jax.jit(lambda variables, batch: embed(variables, dict(batch))), tok_variables)


FAMILY = DalleFamily()
