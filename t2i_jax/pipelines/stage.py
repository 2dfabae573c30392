"""A trained stage: one model loaded from its training workdir, ready to sample or to condition another.

`load_stage(workdir)` reads the run's config.json and its newest checkpoint that
restores (or a given step) and returns a `Stage`: the Flax module, its params,
the config it was trained with (diffusion process, sample settings, data and
tokenizer), the step, and the tokenizer of a text model. Sampling, guidance,
evaluation and the cascades read trained models through it, never through the
trainer's internals.
"""

import dataclasses
from typing import Any, Optional, Sequence

import ml_collections

from t2i_jax import config_keys
from t2i_jax.data import tokenizer as tokenizer_lib
from t2i_jax.diffusion import schedules
from t2i_jax.train import checkpoint, families


@dataclasses.dataclass(frozen=True)
class Stage:
  """A trained model and everything needed to use it.

  Attributes:
    workdir: the training workdir it was read from ("" for params still in training).
    config: the run's config (model, data, diffusion, sample sections).
    model: the Flax module (`models.build(config.model)`).
    params: its params pytree (the EMA copy unless asked otherwise).
    step: the checkpoint's step.
    tokenizer: the tokenizer of config.data.tokenizer for a text model, else None.
    model_state: the model's non-param variables (a VQ model's EMA codebook), or None.
  """
  workdir: str
  config: ml_collections.ConfigDict
  model: Any
  params: Any
  step: int
  tokenizer: Any = None
  model_state: Any = None

  @property
  def variables(self) -> dict:
    """What model.apply takes: {"params": params, **model_state}."""
    return {"params": self.params, **(self.model_state or {})}

  @property
  def diffusion(self) -> Optional[ml_collections.ConfigDict]:
    """The diffusion section (schedule, mean and variance types), or None for CLIP."""
    return self.config.get("diffusion")

  @property
  def schedule(self) -> schedules.Schedule:
    """The training Schedule of its diffusion section (the samplers respace it)."""
    return schedules.make_schedule(schedules.beta_schedule(self.diffusion.schedule, self.diffusion.num_timesteps))

  def text_cond(self, prompts: Sequence[str], extra: Optional[dict] = None) -> dict:
    """tokens int32 [N, L] and token_mask bool [N, L] of the prompts at the model's context (+ `extra`).

    Words outside the tokenizer's vocabulary are named in a warning; a prompt with no known word is refused.
    """
    if self.tokenizer is None:
      raise ValueError(f"the model in {self.workdir or 'this stage'} is not conditioned on text; "
                       "give it no prompts.")
    tokenizer_lib.check_prompts(self.tokenizer, prompts)
    tokens, mask = tokenizer_lib.tokenize(self.tokenizer, prompts, self.config.data.context_length)
    return dict(extra or {}, tokens=tokens, token_mask=mask)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training workdir was written with (its config.json, every default filled in)."""
  return checkpoint.read_config(workdir)


def load_stage(workdir: str, config: Optional[ml_collections.ConfigDict] = None, *, step: Optional[int] = None,
               use_ema: Optional[bool] = None) -> Stage:
  """The trained model of a workdir.

  Args:
    workdir: a training run's --workdir (config.json and checkpoints/).
    config: the config to build the model from; default the run's own config.json.
    step: a saved step; default the newest checkpoint that restores (a damaged
      newer one is skipped with a warning that names it).
    use_ema: the EMA params (default: config.sample.use_ema, else True).

  Only the params (and the model's non-param variables) are read, never the optimizer state: a config whose
  optim or train section differs from the run's reads the same model.

  Raises:
    ValueError: not a training workdir, no checkpoint, no checkpoint that
      restores, or a checkpoint of another architecture.
  """
  config = checkpoint.read_config(workdir) if config is None else config_keys.complete(config)
  if use_ema is None:
    use_ema = config.sample.use_ema if config.get("sample") is not None else True
  model, params, model_state, got = checkpoint.load_variables(config, workdir, step, use_ema)
  return Stage(workdir, config, model, params, got, families.tokenizer_for(config), model_state)
