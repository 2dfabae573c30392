"""The keys a training config may hold, so a misspelt one fails loudly instead of being ignored.

The model section is checked by models.build against the module's fields; the
other sections against the sets below (what loop, tasks, state and the samplers read).
"""

import difflib

from t2i_jax.diffusion import timestep_sampling

SECTIONS = {
    "data": {"name", "image_size", "data_dir", "seed", "num_train", "random_crop", "random_flip", "tokenizer",
             "context_length", "label_key", "pair_fraction"},
    "diffusion": {"schedule", "num_timesteps", "mean_type", "var_type", "loss_type", "timestep_sampler",
                  "min_snr_gamma", "p_uncond", "early_tail_fraction", "early_tail_steps",
                  *timestep_sampling.LOGIT_NORMAL_KEYS},
    "optim": {"lr", "warmup_steps", "schedule", "total_steps", "cooldown_steps", "weight_decay", "b1", "b2",
              "grad_clip"},
    "train": {"batch_size", "num_steps", "log_every", "checkpoint_every", "max_to_keep", "ema_rate", "ema_warmup",
              "grad_accum_steps", "sample_every"},
    "sample": {"method", "steps", "guidance", "eta", "min_timestep", "use_ema", "prompts", "num_images", "labels",
               "split", "classifier_workdir", "classifier_scale"},
    "prior": {"clip_workdir"},
    "eval": {"num_single", "num_heldout", "num_pair", "batch_size", "seed", "settings"},
}
TOP_LEVEL = {"seed", "fsdp", "model"} | set(SECTIONS)
REQUIRED = ("model", "data", "optim", "train")


def _unknown(keys, allowed, where: str) -> list:
  problems = []
  for key in sorted(set(keys) - set(allowed)):
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    problems.append(f"{where}{key}{hint}")
  return problems


def check(config) -> None:
  """Raises a ValueError naming every unknown key (with the nearest known one) and every missing section."""
  problems = _unknown(config.keys(), TOP_LEVEL, "")
  for section, allowed in SECTIONS.items():
    if config.get(section) is not None:
      problems += _unknown(config[section].keys(), allowed, f"{section}.")
  missing = [s for s in REQUIRED if config.get(s) is None]
  if problems or missing:
    message = []
    if problems:
      message.append(f"unknown config key(s): {', '.join(problems)}")
    if missing:
      message.append(f"missing section(s): {', '.join(missing)}")
    raise ValueError("; ".join(message) + ". Fix the config file or the --config.* override; nothing was run.")
