"""The sections of a training config and their defaults, defined once.

`DEFAULTS` is every key a section may hold and its value when a config leaves
it out: `...` where there is none (the config must set it), a type for an
optional value that is None unless set. The data section's table is the data
pipeline's own (`input_pipeline.DATA_DEFAULTS`). From it:
- `section(name, **values)` builds a complete section (configs/common.py);
- `complete(config)` refuses unknown keys (naming the nearest known one) and
  missing required ones, and returns a copy with every default filled in, so the
  code reads `config.train.sample_every`, never `config.get(key, default)`;
- the model section is checked by models.build against the module's fields.
"""

import dataclasses
import difflib
import inspect
from typing import Any

import ml_collections
from ml_collections import config_dict

from t2i_jax.data import input_pipeline, masks
from t2i_jax.diffusion import timestep_sampling

# The logit-normal sampler's parameters default to its own keyword defaults.
_SAMPLER_KEYWORDS = inspect.signature(timestep_sampling.sample_timesteps).parameters
_LOGIT_NORMAL = {k: _SAMPLER_KEYWORDS[k].default for k in timestep_sampling.LOGIT_NORMAL_KEYS}

DEFAULTS = {
    "data": input_pipeline.DATA_DEFAULTS,
    # Improved DDPM's hybrid setup: cosine schedule, learned-range variance, L_simple + λ·L_vlb.
    "diffusion": dict(schedule="cosine", num_timesteps=1000, mean_type="eps", var_type="learned_range",
                      loss_type="rescaled_mse", timestep_sampler="uniform", **_LOGIT_NORMAL, early_tail_fraction=0.0,
                      early_tail_steps=0, min_snr_gamma=float, p_uncond=0.0,
                      # A column of EDM's design space (diffusion/edm.py: "edm", "vp", "ve") instead of the discrete
                      # schedule above: the network's preconditioning, training σ and λ(σ), and the sampler's σ range.
                      preconditioning=str, sigma_data=0.5, p_mean=-1.2, p_std=1.2, sigma_min=0.002, sigma_max=80.0),
    # AdamW with warmup and global-norm clipping; "constant", "cosine" or "wsd" (state.make_lr_schedule).
    "optim": dict(lr=..., warmup_steps=0, schedule="constant", total_steps=0, cooldown_steps=0,
                  weight_decay=0.0, b1=0.9, b2=0.999, grad_clip=1.0),
    "train": dict(batch_size=..., num_steps=..., log_every=100, checkpoint_every=10_000, max_to_keep=3,
                  ema_rate=0.9999, ema_warmup=False, grad_accum_steps=1, sample_every=0,
                  # EDM2's post-hoc EMA (train/posthoc_ema.py): the σ_rel of each power-function profile kept, and
                  # how often they are snapshot (steps); () keeps none.
                  posthoc_ema=(), posthoc_every=0),
    # --mode=sample, the loop's periodic samples and --mode=eval's sampler defaults. Gradient guidance:
    # a noisy classifier (classifier_workdir, guided diffusion) or a noised CLIP (clip_workdir, GLIDE).
    # threshold: each x0 prediction clipped to [-1, 1] ("static"), Imagen's "dynamic" thresholding at
    # threshold_percentile, or left alone ("none": latents). churn: Karras's S_churn for euler and heun, applied
    # at σ in churn_range (S_min, S_max) with noise inflated by churn_noise (S_noise; diffusion/edm.Churn).
    "sample": dict(method="ddim", steps=50, guidance=1.0, eta=0.0, min_timestep=0, use_ema=True, prompts=(),
                   num_images=8, labels=(), split="test", classifier_workdir="", classifier_scale=1.0,
                   clip_workdir="", clip_scale=0.0, threshold="static", threshold_percentile=0.995,
                   start_timestep=0, churn=0.0, churn_range=(0.0, float("inf")), churn_noise=1.0),
    "prior": dict(clip_workdir=...),
    # unCLIP's decoder: the frozen CLIP that embeds each training image, and how often each condition is
    # dropped for classifier-free guidance (the paper's rates: the CLIP embedding 10%, the caption 50%).
    "decoder": dict(clip_workdir=..., p_drop_clip=0.1, p_drop_text=0.5),
    # A super-resolution U-Net's low-resolution input: the data's images downsampled `factor` times,
    # corrupted in training by noise at a level drawn from {0, …, noise_aug_max} (timesteps of its own
    # schedule) after a blur of σ ~ U[0, blur_sigma_max] pixels; sampled at level noise_aug_sample.
    "low_res": dict(factor=4, noise_aug_max=0, noise_aug_sample=0, blur_sigma_max=0.0),
    # An inpainting U-Net's (model.inpaint) training masks, drawn in the loss (data.masks.MaskSettings).
    "inpaint": dataclasses.asdict(masks.MaskSettings()),
    # Fine-tuning: params start from the (EMA) params of another run's workdir, new input channels zeroed
    # (train.finetune); used by GLIDE's inpainting model, fine-tuned from the base.
    "finetune": dict(workdir=..., use_ema=True),
    # Latent diffusion's first stage (models/autoencoder.py; its loss: train/autoencoder_loss.py).
    "autoencoder": dict(
        reconstruction="l1",  # the per-pixel reconstruction term, "l1" or "l2"
        kl_weight=1e-6,  # the KL term's weight for a KL model (latent-diffusion's)
        disc_weight=0.0,  # the adversarial term's weight (× VQGAN's adaptive λ); 0 = off, > 0 needs model.disc_layers
        disc_start=0,  # the first step at which the discriminator and the adversarial term train (zero before)
    ),
    # A latent U-Net (train.frozen_autoencoder): the frozen autoencoder whose scaled latents it learns, and
    # the frozen CLIP whose token states it attends to ("": its own text encoder, model.text).
    "latent_diffusion": dict(autoencoder_workdir=..., clip_workdir=""),
    # A chain config (configs/shapes_unclip.py): the stages' workdirs and each stage's sampler as
    # METHOD:STEPS:GUIDANCE over its own sample section; K prior candidates per prompt (unCLIP: 2); what
    # the decoder's guidance contrasts ("both": the embedding and caption against neither; "caption": the
    # caption against none, the embedding in both halves).
    "unclip": dict(clip_workdir=..., prior_workdir=..., decoder_workdir=..., upsampler_workdir="",
                   prior="ddim:25:1", decoder="dpm++2m:20:3", upsampler="dpm++2m:10:1", candidates=2,
                   decoder_guides="both", prompts=(), num_images=4),
    # GLIDE's cascade (configs/shapes_glide.py): the base text U-Net's and the text-conditional
    # upsampler's workdirs and samplers (METHOD:STEPS:GUIDANCE over each stage's own sample section).
    "glide": dict(base_workdir=..., upsampler_workdir="", base="dpm++2m:20:3", upsampler="dpm++2m:10:1",
                  prompts=(), num_images=4),
    # Latent diffusion (configs/shapes_latent_chain.py): the latent U-Net and the frozen models it must
    # have been trained on, and its sampler (METHOD:STEPS:GUIDANCE).
    "latent": dict(unet_workdir=..., autoencoder_workdir=..., clip_workdir="", sampler="dpm++2m:20:3",
                   prompts=(), num_images=4),
    # DALL·E's discrete VAE (train/dvae_loss.py): β of the KL to the uniform prior, ramped in over
    # kl_warmup_steps; the gumbel-softmax temperature annealed from 1 to temperature_end over temperature_steps.
    "dvae": dict(kl_weight=6.6, kl_warmup_steps=5000, temperature_end=1.0 / 16.0, temperature_steps=150_000),
    # DALL·E's transformer (configs/shapes_dalle.py): the frozen VQ tokenizer whose codes it learns, the
    # text term's weight (the paper's 1/8) and how often a caption is dropped (super-conditioning).
    "transformer": dict(tokenizer_workdir=..., text_loss_weight=0.125, p_drop_text=0.1),
    # DALL·E's chain (configs/shapes_dalle_chain.py): tokenizer, transformer and the optional re-ranking
    # CLIP; the token sampler; candidates per prompt that the CLIP re-ranks.
    "dalle": dict(tokenizer_workdir=..., transformer_workdir=..., clip_workdir="", temperature=1.0, top_k=0,
                  top_p=1.0, scale=1.0, candidates=1, prompts=(), num_images=4),
    # --mode=eval's prompt set (eval.evaluate) and sampler settings, the first the headline.
    # diversity: num_diverse one-object prompts drawn diverse_samples times each.
    "eval": dict(num_single=200, num_heldout=40, num_pair=100, batch_size=100, seed=0,
                 settings=("dpm++2m:20:3",), num_diverse=20, diverse_samples=4),
}
TOP_LEVEL = {"seed": 0, "fsdp": 1}
# The sections of a chain config, which names trained stages and trains nothing.
CHAINS = ("unclip", "glide", "latent", "dalle")
REQUIRED_SECTIONS = ("model", "data", "optim", "train")


def _value(default: Any) -> Any:
  # A typed placeholder (None) rather than None, so that --config.X=... can still set the value.
  return config_dict.placeholder(default) if isinstance(default, type) else default


def section(section_name: str, /, **values) -> ml_collections.ConfigDict:
  """A complete `section_name` section: `values` over the defaults; ValueError on an unknown or missing key."""
  problems = _unknown(values, DEFAULTS[section_name], f"{section_name}.")
  missing = [f"{section_name}.{k}" for k, v in DEFAULTS[section_name].items() if v is ... and k not in values]
  if problems or missing:
    raise ValueError(_message(problems, missing))
  defaults = DEFAULTS[section_name]
  return ml_collections.ConfigDict({k: values[k] if k in values else _value(v) for k, v in defaults.items()})


def section_of(config, section_name: str) -> ml_collections.ConfigDict:
  """config[section_name], or the section of defaults when the config has none (its keys all optional)."""
  return config[section_name] if config.get(section_name) is not None else section(section_name)


def _unknown(keys, allowed, where: str) -> list:
  problems = []
  for key in sorted(set(keys) - set(allowed)):
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    problems.append(f"{where}{key}{hint}")
  return problems


def _message(problems, missing) -> str:
  parts = []
  if problems:
    parts.append(f"unknown config key(s): {', '.join(problems)}")
  if missing:
    parts.append(f"missing config key(s) or section(s): {', '.join(missing)}")
  return "; ".join(parts) + ". Fix the config file or the --config.* override; nothing was run."


def chain_kind(config):
  """The chain section a chain config has (one of CHAINS: "unclip", "glide", "latent", "dalle"), None for a stage's
  config; pipelines.chains maps it to the chain."""
  kinds = [kind for kind in CHAINS if config.get(kind) is not None]
  if len(kinds) > 1:
    raise ValueError(f"the config has sections {kinds}: a chain config is one chain; keep one of them.")
  return kinds[0] if kinds else None


def complete(config) -> ml_collections.ConfigDict:
  """A copy of config with every section's defaults filled in.

  Raises:
    ValueError: naming every unknown key (with the nearest known one), every
      missing required section and every missing required key.
  """
  problems = _unknown(config.keys(), set(TOP_LEVEL) | {"model"} | set(DEFAULTS), "")
  # A chain config trains nothing: it names trained stages.
  missing = [s for s in REQUIRED_SECTIONS if config.get(s) is None and chain_kind(config) is None]
  for name, defaults in DEFAULTS.items():
    if config.get(name) is not None:
      problems += _unknown(config[name].keys(), defaults, f"{name}.")
      missing += [f"{name}.{k}" for k, v in defaults.items() if v is ... and config[name].get(k) is None]
  if problems or missing:
    raise ValueError(_message(problems, missing))
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in TOP_LEVEL.items():
    if out.get(key) is None:
      out[key] = value
  for name, defaults in DEFAULTS.items():
    if out.get(name) is not None:
      for key, value in defaults.items():
        if key not in out[name]:
          out[name][key] = _value(value)
  return out
