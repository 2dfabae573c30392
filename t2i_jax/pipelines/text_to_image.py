"""Images from a U-Net: tokenise (or take labels / low-resolution images), guide, sample (GLIDE's stages)."""

import dataclasses
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from t2i_jax import config_keys, models
from t2i_jax.diffusion import augmentation, checks, edm, gaussian, guidance, samplers, schedules
from t2i_jax.models import clip as clip_lib, frozen


def respaced_schedule(diffusion_config, method: str, steps: int, min_timestep: int = 0, start_timestep: int = 0):
  """(schedule, timestep_map) for sampling with `steps` steps: DDIM's integer stride when it divides
  the span evenly ("ddimN"), else the reference's even sections; Karras samplers take the full schedule (from
  min_timestep, respaced to keep every timestep there and above).

  min_timestep: the steps are spread over original timesteps [min_timestep, T) rather than [0, T).
    The respaced process then starts at ᾱ(min_timestep), so the sampler's last step goes from
    min_timestep straight to the clean image with the model's x0 prediction there, and the model
    is never asked about the least noisy levels (a model trained with few draws there, e.g.
    narrow logit-normal timesteps, adds noise at them instead of removing it).
  start_timestep: when > 0, the steps are spread over [min_timestep, start_timestep] instead, the last
    of them start_timestep itself (SDEdit's truncated process, `SampleSettings.start_timestep`).
  """
  num_timesteps = diffusion_config.num_timesteps
  betas = schedules.beta_schedule(diffusion_config.schedule, num_timesteps)
  if method in ("euler", "heun"):
    if start_timestep:
      raise ValueError(f"start_timestep={start_timestep}: the Karras samplers ({method}) start from noise; set "
                       "it to 0 with them, or use ddim / dpm++2m / ddpm.")
    if not 0 <= min_timestep < num_timesteps - 1:
      raise ValueError(f"min_timestep={min_timestep} must lie in [0, {num_timesteps - 2}].")
    # The grid spans the σs of timesteps [min_timestep, T), its last step going to the model's x0 there.
    return schedules.respace(betas, range(min_timestep, num_timesteps)) if min_timestep else (
        schedules.make_schedule(betas), None)
  top = start_timestep + 1 if start_timestep else num_timesteps
  span = top - min_timestep
  if start_timestep >= num_timesteps:
    raise ValueError(f"start_timestep={start_timestep} must lie below T = {num_timesteps} (0: start from noise).")
  if min_timestep < 0 or span < steps:
    raise ValueError(f"min_timestep={min_timestep} must lie in [0, {top - steps}] for {steps} steps of a "
                     f"{num_timesteps}-step process" + (f" started at {start_timestep}." if start_timestep else "."))
  spacing = f"ddim{steps}" if method == "ddim" and span % steps == 0 else str(steps)
  return schedules.respace(betas, min_timestep + schedules.space_timesteps(span, spacing))


THRESHOLDS = ("static", "dynamic", "none")


@dataclasses.dataclass(frozen=True)
class SampleSettings:
  """How to sample a diffusion U-Net.

  Attributes:
    method: one of samplers.METHODS ("ddpm", "ddim", "dpm++2m", "euler", "heun").
    steps: sampling steps (>= 1).
    guidance: classifier-free guidance scale w (1: none; the model needs a null condition otherwise).
    eta: DDIM's η.
    min_timestep: the lowest original timestep visited (see respaced_schedule).
    seed: the noise seed.
    var_type: the reverse-step variance (None: the training config's); "fixed_small" or "fixed_large"
      with a learned-variance model drops its variance output (Improved DDPM's learned vs fixed
      comparison on one network). Only the ancestral sampler uses it.
    threshold: what bounds each x0 prediction: "static" clips it to [-1, 1] (pixels), "dynamic" is
      Imagen's dynamic thresholding at `percentile` (guidance.dynamic_threshold), "none" leaves it
      (latents, whose range is not [-1, 1]).
    percentile: the quantile of |x0| that dynamic thresholding scales to 1 (Imagen: 0.995).
    start_timestep: 0 starts the reverse process from noise at T; t > 0 starts it at original timestep t
      from an initial image noised to that level (SDEdit, Meng et al. 2022): what the image already holds
      above that noise level is kept. A super-resolution stage starts from its upsampled input.
    churn: Karras's stochastic churn (edm.Churn) for "euler" and "heun".
  """
  method: str = "ddim"
  steps: int = 50
  guidance: float = 1.0
  eta: float = 0.0
  min_timestep: int = 0
  seed: int = 0
  var_type: Optional[str] = None
  threshold: str = "static"
  percentile: float = 0.995
  start_timestep: int = 0
  churn: edm.Churn = edm.Churn()

  def __post_init__(self):
    checks.check_choice("sampler", self.method, samplers.METHODS)
    checks.check_choice("threshold", self.threshold, THRESHOLDS)
    if not 0.5 <= self.percentile <= 1.0:
      raise ValueError(f"percentile={self.percentile!r}: dynamic thresholding scales a high quantile of |x0| "
                       "to 1; use a value in [0.5, 1] (Imagen: 0.995).")
    if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
      raise ValueError(f"steps={self.steps!r}: sample with at least 1 step (e.g. 20 for dpm++2m, 50 for ddim).")
    if not math.isfinite(self.guidance):
      raise ValueError(f"guidance={self.guidance!r} must be a finite number (1 = no guidance, e.g. 3).")
    if self.var_type is not None:
      checks.check_choice("var_type", self.var_type, checks.VAR_TYPES)
    if isinstance(self.start_timestep, bool) or not isinstance(self.start_timestep, int) or self.start_timestep < 0:
      raise ValueError(f"start_timestep={self.start_timestep!r}: 0 starts from noise, t > 0 from an initial image "
                       "noised to timestep t.")

  def reseeded(self, seed: int) -> "SampleSettings":
    return dataclasses.replace(self, seed=seed)

  @classmethod
  def from_config(cls, sample_config, **overrides) -> "SampleSettings":
    """The settings of a config's sample section, with the non-None `overrides` on top (churn: an edm.Churn, or
    S_churn over the section's churn_range and churn_noise)."""
    values = dict(method=sample_config.method, steps=sample_config.steps, guidance=sample_config.guidance,
                  eta=sample_config.eta, min_timestep=sample_config.min_timestep,
                  threshold=sample_config.threshold, percentile=sample_config.threshold_percentile,
                  start_timestep=sample_config.start_timestep, churn=sample_config.churn)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not isinstance(values["churn"], edm.Churn):  # S_churn over the section's range and noise
      values["churn"] = edm.Churn(values["churn"], *sample_config.churn_range, sample_config.churn_noise)
    return cls(**values)


def stage_settings(stage, text: str, seed: int = 0, **overrides) -> SampleSettings:
  """A chain stage's SampleSettings: "METHOD:STEPS:GUIDANCE" (a chain config's, `parse_setting`) over the
  stage's own sample section (η, lowest timestep), the seed and any non-None `overrides` on top."""
  setting = dict(parse_setting(text), seed=seed, **overrides)
  return SampleSettings.from_config(config_keys.section_of(stage.config, "sample"), **setting)


def parse_setting(text: str) -> dict:
  """"dpm++2m:20:3" -> dict(method="dpm++2m", steps=20, guidance=3.0). Optional further fields: the
  ancestral sampler's variance ("ddpm:50:3:fixed_large"; default: the training config's var_type), the
  timestep to start from ("dpm++2m:10:1:start=500", `SampleSettings.start_timestep`) and Karras's S_churn
  ("heun:18:3:churn=10", over the sample section's churn range and noise)."""
  parts = text.split(":")
  usage = ("must read METHOD:STEPS:GUIDANCE[:VAR_TYPE][:start=T][:churn=S], e.g. 'dpm++2m:20:3', "
           "'ddpm:50:3:fixed_large', 'dpm++2m:10:1:start=500' or 'heun:18:3:churn=10'")
  if not 3 <= len(parts) <= 6:
    raise ValueError(f"sampler setting {text!r} {usage}.")
  try:
    setting = dict(method=parts[0], steps=int(parts[1]), guidance=float(parts[2]))
  except ValueError:
    raise ValueError(f"sampler setting {text!r}: STEPS must be an integer and GUIDANCE a number.") from None
  for part in parts[3:]:
    if part.startswith("start=") and "start_timestep" not in setting:
      try:
        setting["start_timestep"] = int(part[len("start="):])
      except ValueError:
        raise ValueError(f"sampler setting {text!r}: start=T takes an integer timestep.") from None
    elif part.startswith("churn=") and "churn" not in setting:
      try:
        setting["churn"] = edm.Churn(float(part[len("churn="):])).amount
      except ValueError as e:
        raise ValueError(f"sampler setting {text!r}: churn=S takes S_churn ≥ 0 ({e}).") from None
    elif part in checks.VAR_TYPES and "var_type" not in setting:
      setting["var_type"] = part
    else:
      raise ValueError(f"sampler setting {text!r}: {part!r} is neither a VAR_TYPE {checks.VAR_TYPES}, start=T "
                       f"nor churn=S; it {usage}.")
  return setting


def low_res_cond(stage, low_res, seed: int = 0) -> dict:
  """A super-resolution stage's sampling-time condition: low_res [N, h, w, C] in [-1, 1] noised at the
  fixed level config.low_res.noise_aug_sample (when it trained with augmentation), and that level."""
  settings = config_keys.section_of(stage.config, "low_res")
  low_res = jnp.asarray(low_res, jnp.float32)
  if not settings.noise_aug_max and not stage.model.noise_aug_embedding:
    return {"low_res": low_res}
  level = jnp.full((low_res.shape[0],), settings.noise_aug_sample, jnp.int32)
  noise = jax.random.normal(jax.random.PRNGKey(seed), low_res.shape)
  cond = {"low_res": augmentation.noise_augment(stage.schedule, low_res, level, noise)}
  if stage.model.noise_aug_embedding:
    cond["noise_aug_t"] = level
  return cond


def sample_unet(model, params, diffusion_config, cond: dict, num: int, settings: SampleSettings, grad_fn=None,
                x_T=None, inpaint=None, x_init=None, null_cond=None):
  """Images [num, H, W, C] in [-1, 1] from a U-Net given its conditioning kwargs.

  Args:
    cond: the U-Net's conditioning inputs with leading axis `num` (tokens and
      token_mask, y, low_res, ...); {} for an unconditional model.
    settings: the sampler, its steps, the guidance scale (w = 1: none) and the seed.
    grad_fn: optional classifier guidance, (x_t, t, cond) -> scaled ∇ log p(y | x_t)
      (models.classifier.classifier_grad_fn), cond holding the target classes "y".
    x_T: optional starting noise [num, H, W, C] (default: drawn from settings.seed); a fixed x_T holds
      the noise still while the condition moves (unCLIP's interpolations).
    inpaint: optional (known [num, H, W, C], mask [num, H, W, 1], 1 = known): the known region replaced
      at every step (samplers.sample's inpaint; pipelines.inpaint).
    x_init: the initial image [num, H, W, C] that settings.start_timestep > 0 starts from, noised to that
      level with x_T's noise (or the seed's).
    null_cond: what classifier-free guidance contrasts the condition with (default: the model's
      null_condition(), every condition dropped); a condition it does not name is in both halves.
  """
  var_type = settings.var_type or diffusion_config.var_type
  learned = diffusion_config.var_type in checks.LEARNED_VAR_TYPES
  if var_type in checks.LEARNED_VAR_TYPES and not learned:
    raise ValueError(f"var_type={var_type!r} needs a model trained with learned variance; this one was trained "
                     f"with {diffusion_config.var_type!r}: sample with 'fixed_small' or 'fixed_large'.")
  drop_variance = learned and var_type not in checks.LEARNED_VAR_TYPES
  denoise = models.denoise_fn(model, params, channels=model.out_channels if drop_variance else None)
  if settings.guidance != 1.0:
    denoise = guidance.classifier_free(denoise, settings.guidance,
                                       model.null_condition() if null_cond is None else null_cond)
  method, steps = settings.method, settings.steps
  shape = (num, model.image_size, model.image_size, model.out_channels)
  key = jax.random.PRNGKey(settings.seed)
  cond = {k: jnp.asarray(v) for k, v in cond.items()}
  # A Partial keeps the percentile a leaf of the compiled loop: another percentile does not recompile.
  threshold = {"static": Partial(jnp.clip, min=-1.0, max=1.0), "none": None,
               "dynamic": Partial(guidance.dynamic_threshold, percentile=settings.percentile)}[settings.threshold]
  design = edm.Design.from_config(diffusion_config)
  if design is not None:
    _check_edm_settings(design, settings, grad_fn, inpaint)
    return edm.sample_network(denoise, design, shape, key, method=method, num_steps=steps, cond=cond,
                              churn=settings.churn, denoised_fn=threshold, x_T=x_T)
  schedule, timestep_map = respaced_schedule(diffusion_config, method, steps, settings.min_timestep,
                                             settings.start_timestep)
  if settings.start_timestep:
    if x_init is None:
      raise ValueError(f"start_timestep={settings.start_timestep} starts from an initial image, and this stage "
                       "has none; sample with start_timestep=0.")
    noise = jax.random.normal(jax.random.fold_in(key, 1), shape) if x_T is None else x_T
    last = jnp.full((num,), schedule.num_timesteps - 1, jnp.int32)  # the respaced index of start_timestep
    x_T = gaussian.q_sample(schedule, jnp.asarray(x_init, jnp.float32), last, noise)
  return samplers.sample(
      denoise, schedule, shape, key, method=method, mean_type=diffusion_config.mean_type, var_type=var_type,
      cond=cond, timestep_map=timestep_map, eta=settings.eta, num_steps=steps if method in ("euler", "heun") else None,
      clip_denoised=settings.threshold == "static",
      denoised_fn=threshold if settings.threshold == "dynamic" else None,
      grad_fn=grad_fn, x_T=x_T, inpaint=inpaint, churn=settings.churn)


def _check_edm_settings(design, settings: SampleSettings, grad_fn, inpaint) -> None:
  where = f"a model trained with diffusion.preconditioning={design.preconditioning!r}"
  if settings.method not in edm.METHODS:
    raise ValueError(f"sampler {settings.method!r}: {where} samples on the Karras σ grid; use one of "
                     f"{', '.join(edm.METHODS)} (e.g. 'heun:18:3').")
  if settings.start_timestep or settings.min_timestep:
    raise ValueError(f"start_timestep={settings.start_timestep}, min_timestep={settings.min_timestep}: {where} "
                     "has no timesteps; its σ range is diffusion.sigma_min and sigma_max. Set both to 0.")
  if grad_fn is not None or inpaint is not None:
    raise ValueError(f"{where} samples with classifier-free guidance only; classifier or CLIP guidance and "
                     "inpainting need a DDPM-schedule model.")


def with_text(stage, cond: dict, num: int, prompts: Optional[Sequence[str]] = None) -> dict:
  """cond plus the tokens and mask of the prompts when the stage's U-Net reads text (its null caption when
  prompts is None); cond unchanged for a U-Net without text."""
  if stage.model.text is None:
    return cond
  if prompts is None:
    null = stage.model.null_condition(num)
    return dict(cond, tokens=null["tokens"], token_mask=null["token_mask"])
  return stage.text_cond(prompts, cond)


def super_resolve(stage, low_res, settings: SampleSettings, prompts: Optional[Sequence[str]] = None,
                  x_T=None) -> jax.Array:
  """Images [N, H, W, C] in [-1, 1] from a super-resolution U-Net stage given low-resolution ones
  [N, h, w, C], noised at the level it samples at (`low_res_cond`); a text-conditional one (GLIDE's
  upsampler) reads the prompts, or its null caption without them."""
  num = low_res.shape[0]
  cond = with_text(stage, low_res_cond(stage, low_res, settings.seed), num, prompts)
  x_init = upsample_bilinear(low_res, stage.model.image_size) if settings.start_timestep else None
  return sample_unet(stage.model, stage.params, stage.diffusion, cond, num, settings, x_T=x_T, x_init=x_init)


def upsample_bilinear(images, size: int) -> jax.Array:
  """Images [N, h, w, C] resized bilinearly to [N, size, size, C]: how a super-resolution U-Net reads its
  low_res input (models/unet.py), and where its sampling starts with start_timestep > 0."""
  images = jnp.asarray(images, jnp.float32)
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), method="linear",
                          antialias=False)


def clip_guidance(clip_stage, unet_stage, prompts: Sequence[str], scale: float):
  """GLIDE's CLIP guidance for sampling `unet_stage` from `prompts`: a grad_fn for sample_unet that moves
  each step's mean by scale·Σ·∇_{x_t} of the noised CLIP's image–text score (clip.guidance_grad_fn).

  The CLIP must be a noised one (timestep-conditioned) trained on the U-Net's image size and diffusion
  schedule; the prompts are tokenised with the CLIP's own tokenizer.
  """
  clip_model, where = clip_stage.model, clip_stage.workdir
  if clip_model.image_size != unet_stage.model.image_size:
    raise ValueError(f"the CLIP in {where} reads {clip_model.image_size}px images but the U-Net makes "
                     f"{unet_stage.model.image_size}px ones; train the noised CLIP at the U-Net's size.")
  if not clip_model.timestep_conditioned:
    raise ValueError(f"the CLIP in {where} reads clean images only; CLIP guidance needs a noised CLIP "
                     "(configs/shapes_noised_clip.py).")
  ours, theirs = clip_stage.diffusion, unet_stage.diffusion
  if (ours.schedule, ours.num_timesteps) != (theirs.schedule, theirs.num_timesteps):
    raise ValueError(f"the noised CLIP in {where} was trained on the {ours.schedule} schedule of "
                     f"{ours.num_timesteps} steps but the U-Net samples the {theirs.schedule} schedule of "
                     f"{theirs.num_timesteps}; train the CLIP on the U-Net's diffusion section.")
  cond = clip_stage.text_cond(prompts)
  text_emb, _ = frozen.embed_text(clip_model, clip_stage.params, jnp.asarray(cond["tokens"]),
                                       jnp.asarray(cond["token_mask"]))  # its scale drops out: normalised
  return clip_lib.guidance_grad_fn(clip_model, clip_stage.params, text_emb, scale)


def generate(stage, prompts: Sequence[str], settings: SampleSettings, grad_fn=None):
  """Images [len(prompts), H, W, C] in [-1, 1] for the prompts from a text-conditional U-Net stage
  (`stage.Stage`); settings.guidance is classifier-free guidance with the model's null text; grad_fn
  optional gradient guidance (`clip_guidance`)."""
  return sample_unet(stage.model, stage.params, stage.diffusion, stage.text_cond(prompts), len(prompts), settings,
                     grad_fn)
