"""unCLIP / DALL·E 2 (Ramesh et al., 2022): prompt → CLIP → prior → decoder → upsampler, and variations.

A chain is four trained stages, each read from its workdir (`stage.load_stage`):

  CLIP       text → embedding z_t and token states          configs/shapes_clip.py
  prior      (z_t, states) → CLIP image embedding z_i        configs/shapes_prior.py
  decoder    (z_i, caption) → 16 px image                    configs/shapes_decoder.py
  upsampler  16 px image → 32 px image (optional)            configs/shapes_upsampler.py

The prior draws K candidate embeddings per prompt and keeps the one whose dot
product with z_t is highest (unCLIP §2.2, K = 2). Every stage samples with
classifier-free guidance at its own scale. Each stage is one jit-compiled
program whose params (and guidance scale) are arguments, so new prompts, seeds
or scales run without recompiling. Embeddings move between stages in the scale
the stages trained on (models.frozen.scale_embedding).

Variations: an image's CLIP embedding decoded with new seeds; interpolation:
the slerp between two images' embeddings decoded from one fixed noise (§3.1).
"""

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax import config_keys, models
from t2i_jax.diffusion import guidance, samplers
from t2i_jax.models import clip as clip_lib, frozen, prior as prior_lib
from t2i_jax.pipelines import chain as chain_lib, images as images_lib, stage as stage_lib, text_to_image
from t2i_jax.pipelines.text_to_image import SampleSettings
from t2i_jax.train import families, frozen_clip

OUTPUTS = ("decoder", "upsampler")
DECODER_GUIDES = ("both", "caption")


@dataclasses.dataclass(frozen=True)
class Settings:
  """How each stage samples: SampleSettings for the prior, decoder and upsampler, K candidates, and what
  the decoder's classifier-free guidance contrasts: "both" (embedding and caption against neither) or
  "caption" (the caption against the null caption, the embedding given to both halves)."""
  prior: SampleSettings
  decoder: SampleSettings
  upsampler: SampleSettings
  candidates: int = 2
  decoder_guides: str = "both"

  def __post_init__(self):
    if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 1:
      raise ValueError(f"unclip.candidates={self.candidates!r}: draw at least 1 prior sample per prompt "
                       "(unCLIP: 2).")
    if self.decoder_guides not in DECODER_GUIDES:
      raise ValueError(f"unclip.decoder_guides={self.decoder_guides!r}: choose one of {DECODER_GUIDES}.")

  @classmethod
  def from_config(cls, unclip_config, chain: "Stages", seed: int = 0,
                  decoder: Optional[dict] = None) -> "Settings":
    """The chain config's unclip section ("METHOD:STEPS:GUIDANCE" per stage) over each stage's own sample
    section (η, lowest timestep); `decoder` overrides the decoder's setting (an eval row's)."""
    upsampler = chain.upsampler or chain.decoder  # without one its settings are parsed but unused
    settings = text_to_image.stage_settings
    return cls(prior=settings(chain.prior, unclip_config.prior, seed),
               decoder=settings(chain.decoder, unclip_config.decoder, seed, **(decoder or {})),
               upsampler=settings(upsampler, unclip_config.upsampler, seed), candidates=unclip_config.candidates,
               decoder_guides=unclip_config.decoder_guides)

  def reseeded(self, seed: int) -> "Settings":
    return dataclasses.replace(self, **{name: dataclasses.replace(getattr(self, name), seed=seed)
                                        for name in ("prior", "decoder", "upsampler")})


@dataclasses.dataclass(frozen=True)
class Stages:
  """The loaded stages of an unCLIP chain (upsampler None: the decoder's resolution is the output)."""
  clip: stage_lib.Stage
  prior: stage_lib.Stage
  decoder: stage_lib.Stage
  upsampler: Optional[stage_lib.Stage] = None


def check_chain(configs: dict) -> None:
  """Raises a ValueError naming both sides unless every stage was trained on the chain's CLIP and they fit.

  configs: {"clip" | "prior" | "decoder" | "upsampler": (workdir, that run's config)}.
  """
  kinds = dict(clip=lambda c: models.module_class(c.model) is models.CLIP,
               prior=lambda c: models.module_class(c.model) is models.DiffusionPrior,
               decoder=lambda c: families.unet.role(c) == "decoder",
               upsampler=lambda c: families.unet.role(c) == "super_res")
  for name, (workdir, config) in configs.items():
    if not kinds[name](config):
      raise ValueError(f"unclip.{name}_workdir={workdir} holds a {config.model.name!r} model that is not an "
                       f"unCLIP {name}; point it at a workdir of configs/shapes_{name}.py.")
  clip_workdir, clip_config = configs["clip"]
  for name in ("prior", "decoder"):
    workdir, config = configs[name]
    trained_on = config[name].clip_workdir
    if not frozen_clip.same_workdir(trained_on, clip_workdir):
      raise ValueError(f"the {name} in {workdir} was trained on the CLIP in {trained_on}, but the chain's CLIP is "
                       f"{clip_workdir}; set unclip.clip_workdir to the CLIP the stages were trained on (or "
                       "retrain the stage).")
    frozen_clip.check_matches(clip_config, clip_workdir, config, f"{name} in {workdir}")
  if "upsampler" in configs:
    (decoder_dir, decoder), (upsampler_dir, upsampler) = configs["decoder"], configs["upsampler"]
    size, high = decoder.model.image_size, upsampler.model.image_size
    factor = config_keys.section_of(upsampler, "low_res").factor
    if high != size * factor:
      raise ValueError(f"the upsampler in {upsampler_dir} takes {high // factor}px inputs (image_size={high}, "
                       f"low_res.factor={factor}) but the decoder in {decoder_dir} makes {size}px images; "
                       "train them at sizes that meet.")


def load(unclip_config, use_upsampler: bool = True) -> Stages:
  """The stages named by a chain config's unclip section, checked against each other before any checkpoint
  is read."""
  paths = dict(clip=unclip_config.clip_workdir, prior=unclip_config.prior_workdir,
               decoder=unclip_config.decoder_workdir,
               upsampler=unclip_config.upsampler_workdir if use_upsampler else "")
  configs = {name: (path, stage_lib.read_config(path)) for name, path in paths.items() if path}
  check_chain(configs)
  return Stages(**{name: stage_lib.load_stage(path, config) for name, (path, config) in configs.items()})


# --- the stages' programs ------------------------------------------------------------------------

def encode_text(chain: Stages, prompts: Sequence[str]):
  """(scaled CLIP text embeddings [N, E], token states [N, L, D], token mask bool [N, L]) of the prompts."""
  cond = chain.clip.text_cond(prompts)
  emb, states = frozen.embed_text(chain.clip.model, chain.clip.params, cond["tokens"], cond["token_mask"])
  return emb, states, jnp.asarray(cond["token_mask"], bool)


def image_embeddings(chain: Stages, images) -> jax.Array:
  """Scaled CLIP image embeddings [N, E] of uint8 images [N, S, S, 3] (S: the CLIP's image_size)."""
  images = np.asarray(images)
  size = chain.clip.model.image_size
  if images.ndim != 4 or images.shape[1:] != (size, size, 3):
    raise ValueError(f"images have shape {images.shape}; the chain's CLIP reads [N, {size}, {size}, 3] uint8 "
                     f"(resize the image to {size}×{size} RGB).")
  return frozen.embed_images(chain.clip.model, chain.clip.params, jnp.asarray(images, jnp.float32) / 127.5 - 1.0)


def select_candidates(candidates: jax.Array, text_emb: jax.Array) -> jax.Array:
  """unCLIP's re-ranking: of candidates [N, K, E], the one with the highest dot product with text_emb
  [N, E] (both l2-normalised first, so the scale does not matter), [N, E]."""
  scores = jnp.einsum("nke,ne->nk", clip_lib.l2_normalize(candidates), clip_lib.l2_normalize(text_emb))
  best = jnp.argmax(scores, axis=1)
  return jnp.take_along_axis(candidates, best[:, None, None], axis=1)[:, 0]


def sample_prior(prior: stage_lib.Stage, text_emb, states, mask, settings: SampleSettings,
                 candidates: int = 2) -> jax.Array:
  """Scaled CLIP image embeddings [N, E]: K = `candidates` prior samples per prompt, the best kept.

  text_emb [N, E], states [N, L, D], mask [N, L] from `encode_text`. The prior predicts x0 of
  embeddings whose coordinates are not bounded, so its samples are not clipped.
  """
  num = text_emb.shape[0]
  repeat = lambda x: jnp.repeat(x, candidates, axis=0)
  cond = prior_lib.make_cond(repeat(text_emb), repeat(states), repeat(mask))
  denoise = prior_lib.make_denoise_fn(prior.model, prior.params)
  if settings.guidance != 1.0:
    denoise = guidance.classifier_free(denoise, settings.guidance, prior_lib.null_cond(cond))
  schedule, timestep_map = text_to_image.respaced_schedule(prior.diffusion, settings.method, settings.steps,
                                                           settings.min_timestep)
  draws = samplers.sample(
      denoise, schedule, (num * candidates, prior.model.clip_dim), jax.random.PRNGKey(settings.seed),
      method=settings.method, mean_type=prior.diffusion.mean_type, var_type=prior.diffusion.var_type, cond=cond,
      timestep_map=timestep_map, eta=settings.eta, clip_denoised=False,
      num_steps=settings.steps if settings.method in ("euler", "heun") else None)
  return select_candidates(draws.reshape(num, candidates, -1), text_emb)


def decode(decoder: stage_lib.Stage, clip_emb, settings: SampleSettings, prompts: Optional[Sequence[str]] = None,
           x_T=None, guides: str = "both") -> jax.Array:
  """Images [N, H, W, 3] in [-1, 1] from scaled CLIP image embeddings [N, E] (and the captions, when given
  and the decoder reads text; without them its null caption). guides: Settings.decoder_guides."""
  if guides not in DECODER_GUIDES:
    raise ValueError(f"guides={guides!r}: choose one of {DECODER_GUIDES}.")
  model, num = decoder.model, clip_emb.shape[0]
  cond = text_to_image.with_text(decoder, {"clip_emb": jnp.asarray(clip_emb, jnp.float32)}, num, prompts)
  null = model.null_condition()
  if guides == "caption":
    null.pop("clip_emb")  # guidance.classifier_free gives an unnamed condition to both halves
  return text_to_image.sample_unet(model, decoder.params, decoder.diffusion, cond, num, settings, x_T=x_T,
                                   null_cond=null)


def _finish(chain: Stages, clip_emb, settings: Settings, prompts=None, fixed_noise: bool = False) -> dict:
  num = clip_emb.shape[0]
  x_T = {}
  if fixed_noise:  # one noise for every row: only the embedding moves
    for name, stage in (("decoder", chain.decoder), ("upsampler", chain.upsampler)):
      if stage is not None:
        size, channels = stage.model.image_size, stage.model.out_channels
        noise = jax.random.normal(jax.random.PRNGKey(settings.decoder.seed), (1, size, size, channels))
        x_T[name] = jnp.broadcast_to(noise, (num, size, size, channels))
  low = decode(chain.decoder, clip_emb, settings.decoder, prompts, x_T.get("decoder"), settings.decoder_guides)
  out = {"clip_emb": clip_emb, "decoder": low}
  if chain.upsampler is not None:
    out["upsampler"] = text_to_image.super_resolve(chain.upsampler, low, settings.upsampler,
                                                   x_T=x_T.get("upsampler"))
  return out


def generate(chain: Stages, prompts: Sequence[str], settings: Settings) -> dict:
  """Prompts → images: dict(clip_emb [N, E], decoder [N, h, h, 3], upsampler [N, H, H, 3] when the chain
  has one), images in [-1, 1]."""
  text_emb, states, mask = encode_text(chain, prompts)
  clip_emb = sample_prior(chain.prior, text_emb, states, mask, settings.prior, settings.candidates)
  return _finish(chain, clip_emb, settings, prompts)


def variations(chain: Stages, image, num: int, settings: Settings) -> dict:
  """`num` new images with the CLIP embedding of one uint8 image [S, S, 3]: decoded with seeds
  settings.decoder.seed, +1, … (as rows of one batch) and no caption."""
  emb = image_embeddings(chain, np.asarray(image)[None])
  return _finish(chain, jnp.repeat(emb, num, axis=0), settings)


def slerp(a: jax.Array, b: jax.Array, weights: jax.Array) -> jax.Array:
  """Spherical interpolation of [E] vectors at weights [N] in [0, 1] -> [N, E]; the norm is interpolated
  linearly (embeddings of the stages' scale keep their norm sqrt(E))."""
  na, nb = jnp.linalg.norm(a), jnp.linalg.norm(b)
  ua, ub = a / na, b / nb
  angle = jnp.arccos(jnp.clip(jnp.dot(ua, ub), -1.0, 1.0))
  w = jnp.asarray(weights, jnp.float32)[:, None]
  sin = jnp.sin(angle)
  # Nearly parallel vectors: the linear blend is the limit and avoids 0/0.
  mix = jnp.where(sin > 1e-6, (jnp.sin((1 - w) * angle) * ua + jnp.sin(w * angle) * ub) / jnp.maximum(sin, 1e-6),
                  (1 - w) * ua + w * ub)
  return clip_lib.l2_normalize(mix) * ((1 - w) * na + w * nb)


def interpolate(chain: Stages, image_a, image_b, num: int, settings: Settings) -> dict:
  """`num` images along the slerp from image_a's CLIP embedding to image_b's (uint8 [S, S, 3] each),
  decoded from one fixed noise (DDIM with η = 0 makes the path smooth)."""
  emb = image_embeddings(chain, np.stack([np.asarray(image_a), np.asarray(image_b)]))
  return _finish(chain, slerp(emb[0], emb[1], jnp.linspace(0.0, 1.0, num)), settings, fixed_noise=True)


def _from_images(chain: Stages, settings: Settings, num: int, image: str, image2: Optional[str] = None):
  """(result, captions, tag) of --mode=sample --image[=--image2]: `num` variations of the image file, or `num`
  steps of the interpolation between the two (images_lib.read_image, resized to the CLIP's size)."""
  size = chain.clip.model.image_size
  first = images_lib.read_image(image, size, "image", resize=True)
  if image2:
    result = interpolate(chain, first, images_lib.read_image(image2, size, "image2", resize=True), num, settings)
    return result, [f"slerp {w:.2f}" for w in np.linspace(0.0, 1.0, num)], "interpolation"
  return variations(chain, first, num, settings), [f"variation {i}" for i in range(num)], "variations"


CHAIN = chain_lib.Chain(section="unclip", outputs=OUTPUTS, load=load, settings=Settings.from_config,
                        generate=generate, recorded=("prior", "upsampler", "candidates", "decoder_guides"),
                        from_images=_from_images)
