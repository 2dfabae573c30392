"""DALL·E 1's chain: caption → transformer samples image tokens → tokenizer decodes → CLIP re-ranks.

  tokenizer    image ↔ [side, side] codes                 configs/shapes_dvae.py, shapes_autoencoder.py:vq
  transformer  [caption ; codes] decoder-only, causal       configs/shapes_dalle.py
  clip         optional: scores each prompt's candidates    configs/shapes_clip.py

Sampling is one compiled program per batch shape (`sample_tokens`): the caption fills a key/value cache,
then a `lax.scan` feeds each sampled token back, one position at a time. Temperature, top-k, top-p and
the super-conditioning scale (dalle-mini's classifier-free guidance on the logits, uncond + s·(cond −
uncond)) are traced arguments, as are the params and the prompts' tokens, so new prompts or settings do not
recompile; only turning super-conditioning on or off does (it doubles the batch).
"""

import dataclasses
import functools
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from t2i_jax import models
from t2i_jax.models import clip as clip_lib, dalle as dalle_lib, frozen
from t2i_jax.pipelines import chain as chain_lib, stage as stage_lib
from t2i_jax.train import frozen_clip

OUTPUTS = ("image",)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the transformer samples.

  Attributes:
    temperature: logits divided by it before sampling (> 0).
    top_k: keep the k most likely tokens (0: all).
    top_p: keep the smallest set of most likely tokens whose probability reaches p (1: all).
    scale: super-conditioning; 1 samples the caption-conditional logits alone.
    candidates: samples drawn per prompt; the CLIP keeps the best (DALL·E drew 512 and kept 32). A chain
      without a CLIP draws one.
    seed: the sampling seed.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  scale: float = 1.0
  candidates: int = 1
  seed: int = 0

  def __post_init__(self):
    if not (math.isfinite(self.temperature) and self.temperature > 0):
      raise ValueError(f"temperature={self.temperature!r} must be a positive number (1 = the model's logits).")
    if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"top_k={self.top_k!r} must be 0 (off) or a positive number of tokens.")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p!r} must be in (0, 1] (1 = off).")
    if not math.isfinite(self.scale):
      raise ValueError(f"scale={self.scale!r} must be a finite number (1 = no super-conditioning, e.g. 3).")
    if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 1:
      raise ValueError(f"candidates={self.candidates!r}: draw at least 1 sample per prompt.")

  def reseeded(self, seed: int) -> "Settings":
    return dataclasses.replace(self, seed=seed)

  @classmethod
  def from_config(cls, section, stages=None, seed: int = 0, overrides: Optional[dict] = None) -> "Settings":
    """A chain config's dalle section's sampler, `overrides` on top: Settings fields (an eval row's,
    `parse_setting`) or the CLI's --guidance, which is the super-conditioning scale. --sampler and --steps
    name a diffusion sampler, which a token sampler does not have: refused."""
    del stages
    values = dict(temperature=section.temperature, top_k=section.top_k, top_p=section.top_p, scale=section.scale,
                  candidates=section.candidates, seed=seed)
    for key, value in (overrides or {}).items():
      if value is None:
        continue
      if key in ("method", "steps"):
        raise ValueError(f"--{'sampler' if key == 'method' else key}: the DALL·E chain samples tokens, one per "
                         "position; set dalle.temperature, top_k, top_p, or --guidance (super-conditioning).")
      values["scale" if key == "guidance" else key] = value
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"{unknown}: the DALL·E chain samples tokens; set temperature, top_k, top_p or the "
                       "guidance (super-conditioning) scale.")
    return cls(**values)


def parse_setting(text: str) -> dict:
  """An --eval_setting of the token sampler, "KEY=VALUE,..." over temperature, top_k, top_p, scale and
  candidates (e.g. "candidates=8,scale=3"; "" keeps the chain config's) -> the Settings overrides."""
  kinds = dict(temperature=float, top_k=int, top_p=float, scale=float, candidates=int)
  out = {}
  for part in filter(None, text.split(",")):
    key, _, value = part.partition("=")
    if key not in kinds or not value:
      raise ValueError(f"token sampler setting {text!r}: each part is KEY=VALUE with KEY one of "
                       f"{', '.join(kinds)}, e.g. 'candidates=8,scale=3'.")
    try:
      out[key] = kinds[key](value)
    except ValueError:
      raise ValueError(f"token sampler setting {text!r}: {key} takes {kinds[key].__name__} values.") from None
  return out


def filter_logits(logits: jax.Array, top_k, top_p) -> jax.Array:
  """logits [..., V] with every token outside the top k (k = 0: none left out) and outside the nucleus of
  probability top_p set to −inf; the most likely token is always kept. top_k and top_p may be traced."""
  vocab = logits.shape[-1]
  ordered = jnp.sort(logits, axis=-1)[..., ::-1]
  k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  kth = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, logits.shape[:-1])[..., None], axis=-1)
  probs = jax.nn.softmax(ordered, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each
  # The lowest logit still inside the nucleus: the last ranked token whose predecessors hold < top_p.
  inside = jnp.sum(before < top_p, axis=-1, keepdims=True)
  floor = jnp.take_along_axis(ordered, inside - 1, axis=-1)
  keep = (logits >= kth) & (logits >= floor)
  return jnp.where(keep, logits, -jnp.inf)


@functools.partial(jax.jit, static_argnames=("model", "guided"))
def sample_tokens(model, params, text, text_mask, key, temperature, top_k, top_p, scale, guided: bool):
  """int32 image tokens [B, N] for captions text [B, L] (mask [B, L]): the prefix in one pass, then one
  cached step per position; with `guided`, each step's logits are uncond + scale·(cond − uncond)."""
  batch = text.shape[0]
  if guided:
    null, null_mask = dalle_lib.null_text(batch, text.shape[1])
    text, text_mask = jnp.concatenate([text, null]), jnp.concatenate([text_mask, null_mask])
  variables = {"params": params}

  def pick(logits, step):
    if guided:
      cond, uncond = logits[:batch], logits[batch:]
      logits = uncond + scale * (cond - uncond)
    logits = filter_logits(logits / temperature, top_k, top_p)
    return jax.random.categorical(jax.random.fold_in(key, step), logits).astype(jnp.int32)

  logits, cache = model.apply(variables, text, text_mask, method="prefill")
  first = pick(logits, 0)

  def step(carry, index):
    token, cache = carry
    feed = jnp.concatenate([token, token]) if guided else token
    logits, cache = model.apply(variables, feed, index, cache, method="decode")
    token = pick(logits, index + 1)
    return (token, cache), token

  _, rest = jax.lax.scan(step, (first, cache), jnp.arange(model.image_len - 1))
  return jnp.concatenate([first[:, None], rest.T], axis=1)


def rerank(scores: jax.Array) -> jax.Array:
  """The index [N] of each prompt's best candidate by CLIP score [N, K]."""
  return jnp.argmax(scores, axis=1)


@dataclasses.dataclass(frozen=True)
class Stages:
  """The loaded stages of a DALL·E chain (clip None: no re-ranking)."""
  tokenizer: stage_lib.Stage
  transformer: stage_lib.Stage
  clip: Optional[stage_lib.Stage] = None


@functools.partial(jax.jit, static_argnames=("model", "side"))
def _decode_tokens(model, variables, tokens, side):
  codes = tokens.reshape(tokens.shape[0], side, side)
  return jnp.clip(model.apply(variables, codes, method="decode_indices"), -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("clip_model",))
def _clip_scores(clip_model, clip_params, images, tokens, token_mask):
  size = clip_model.image_size
  if images.shape[1] != size:
    images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), method="linear")
  image_emb = frozen.embed_images(clip_model, clip_params, images)
  text_emb, _ = frozen.embed_text(clip_model, clip_params, tokens, token_mask)
  return jnp.sum(clip_lib.l2_normalize(image_emb) * clip_lib.l2_normalize(text_emb), axis=-1)


def generate(stages: Stages, prompts: Sequence[str], settings: Settings) -> dict:
  """Prompts → dict(image [N, H, W, 3] in [-1, 1], tokens int32 [N, side²], clip_score [N] when a CLIP
  re-ranked settings.candidates samples of each prompt)."""
  model = stages.transformer.model
  k = settings.candidates if stages.clip is not None else 1  # without a judge, one sample is all that is kept
  repeated = [p for p in prompts for _ in range(k)]
  cond = stages.transformer.text_cond(repeated)
  tokens = sample_tokens(model, stages.transformer.params, jnp.asarray(cond["tokens"]),
                         jnp.asarray(cond["token_mask"], bool), jax.random.PRNGKey(settings.seed),
                         jnp.float32(settings.temperature), jnp.int32(settings.top_k), jnp.float32(settings.top_p),
                         jnp.float32(settings.scale), guided=settings.scale != 1.0)
  images = _decode_tokens(stages.tokenizer.model, stages.tokenizer.variables, tokens, model.image_side)
  out = {"image": images, "tokens": tokens}
  if k > 1:
    clip_cond = stages.clip.text_cond(repeated)
    scores = _clip_scores(stages.clip.model, stages.clip.params, images, jnp.asarray(clip_cond["tokens"]),
                          jnp.asarray(clip_cond["token_mask"], bool)).reshape(len(prompts), k)
    best = rerank(scores) + jnp.arange(len(prompts)) * k
    out = {"image": images[best], "tokens": tokens[best], "clip_score": scores.max(axis=1)}
  return out


def check_stages(configs: dict) -> None:
  """Raises a one-line ValueError unless the transformer was trained on the chain's tokenizer and the CLIP
  (if any) is a CLIP. configs: {"tokenizer" | "transformer" | "clip": (workdir, that run's config)}."""
  tok_dir, tok = configs["tokenizer"]
  if models.module_class(tok.model) not in models.IMAGE_TOKENIZERS:
    raise ValueError(f"dalle.tokenizer_workdir={tok_dir} holds no image tokenizer (a dVAE or a VQ model); point it "
                     "at a workdir of configs/shapes_dvae.py or configs/shapes_autoencoder.py:vq.")
  tr_dir, tr = configs["transformer"]
  if models.module_class(tr.model) is not dalle_lib.DalleTransformer:
    raise ValueError(f"dalle.transformer_workdir={tr_dir} holds no DALL·E transformer; point it at a workdir "
                     "of configs/shapes_dalle.py.")
  trained_on = tr.transformer.tokenizer_workdir
  if not frozen_clip.same_workdir(trained_on, tok_dir):
    raise ValueError(f"the transformer in {tr_dir} was trained on the tokens of {trained_on}, not {tok_dir}; set "
                     "dalle.tokenizer_workdir to that tokenizer (or retrain the transformer).")
  clip = configs.get("clip")
  if clip is not None:
    clip_dir, clip_config = clip
    if models.module_class(clip_config.model) is not models.CLIP:
      raise ValueError(f"dalle.clip_workdir={clip_dir} holds no CLIP; point it at a workdir of "
                       "configs/shapes_clip.py, or leave it empty for no re-ranking.")


def load(section) -> Stages:
  """The stages named by a chain config's dalle section, checked against each other before any checkpoint
  is read."""
  paths = dict(tokenizer=section.tokenizer_workdir, transformer=section.transformer_workdir,
               clip=section.clip_workdir)
  configs = {name: (path, stage_lib.read_config(path)) for name, path in paths.items() if path}
  check_stages(configs)
  return Stages(**{name: stage_lib.load_stage(path, config) for name, (path, config) in configs.items()})


CHAIN = chain_lib.Chain(section="dalle", outputs=OUTPUTS, load=load, settings=Settings.from_config,
                        generate=generate, recorded=("temperature", "top_k", "top_p", "scale", "candidates"),
                        parse_setting=parse_setting)
