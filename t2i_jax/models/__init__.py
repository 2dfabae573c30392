"""Flax Linen modules, chosen by `config.name` from the explicit table MODELS.

    model = models.build(config.model)          # an nn.Module
    args, kwargs = models.example_inputs(model)  # dummy inputs of the right shapes
    n = models.count_params(config.model)        # via jax.eval_shape: no memory spent

A model section is an ml_collections.ConfigDict (or dict) whose keys are the
module's fields plus `name`; `dtype` is "float32" or "bfloat16" (activations;
params are always float32).
"""

import dataclasses
from typing import Any, Callable, Dict, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.models.apply import denoise_fn  # noqa: F401  (re-exported)
from t2i_jax.models.autoencoder import AutoencoderKL, VQModel
from t2i_jax.models.classifier import NoisyClassifier
from t2i_jax.models.clip import CLIP
from t2i_jax.models.dalle import DalleTransformer
from t2i_jax.models.dvae import DiscreteVAE
from t2i_jax.models.prior import DiffusionPrior
from t2i_jax.models.unet import UNet

MODELS: Dict[str, type] = {
    "unet": UNet,
    "classifier": NoisyClassifier,
    "prior": DiffusionPrior,
    "clip": CLIP,
    "autoencoder_kl": AutoencoderKL,
    "autoencoder_vq": VQModel,
    "dalle": DalleTransformer,
    "dvae": DiscreteVAE,
}
# The modules that turn an image into discrete codes and back (encode_indices / decode_indices): DALL·E's.
IMAGE_TOKENIZERS = (DiscreteVAE, VQModel)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _freeze(value):
  """Config values as hashable module fields: dicts -> FrozenDict, lists -> tuples."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return flax.core.FrozenDict({k: _freeze(v) for k, v in value.items()})
  if isinstance(value, list):
    return tuple(_freeze(v) for v in value)
  return value


def module_class(config) -> type:
  """The module class a model section names (MODELS[config.name]), or None for an unknown name: how code
  asks what kind of model a config holds without testing its name."""
  return MODELS.get(config.get("name"))


def build(config) -> nn.Module:
  """The module named by config.name, with the section's other keys as its fields."""
  fields = dict(_freeze(config))
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ValueError(f"model name={name!r} is not known; use one of {', '.join(map(repr, MODELS))}.")
  cls = MODELS[name]
  known = set(cls.__dataclass_fields__) - {"parent", "name"}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"model {name!r} has no option(s) {unknown}; its options are {sorted(known)}.")
  required = sorted(k for k, f in cls.__dataclass_fields__.items()
                    if k in known and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
  missing = [k for k in required if k not in fields]
  if missing:
    raise ValueError(f"model {name!r} needs {missing} in its config section.")
  if "dtype" in fields:
    if fields["dtype"] not in DTYPES:
      raise ValueError(f"model dtype={fields['dtype']!r}; use one of {list(DTYPES)}.")
    fields["dtype"] = DTYPES[fields["dtype"]]
  return cls(**fields)


def _unet_inputs(m: UNet, batch: int):
  x = np.zeros((batch, m.image_size, m.image_size, m.in_channels), np.float32)
  kwargs = {}
  if m.num_classes is not None:
    kwargs["y"] = np.zeros((batch,), np.int32)
  if m.text is not None:
    kwargs["tokens"] = np.zeros((batch, m.text["context_length"]), np.int32)
    kwargs["token_mask"] = np.ones((batch, m.text["context_length"]), bool)
  if m.clip_dim is not None:
    kwargs["clip_emb"] = np.zeros((batch, m.clip_dim), np.float32)
  if m.context_dim is not None:
    kwargs["context"] = np.zeros((batch, 77, m.context_dim), np.float32)
  if m.pooled_dim is not None:
    kwargs["pooled"] = np.zeros((batch, m.pooled_dim), np.float32)
  if m.super_res:
    kwargs["low_res"] = np.zeros((batch, m.image_size // 4, m.image_size // 4, m.in_channels), np.float32)
  if m.noise_aug_embedding:
    kwargs["noise_aug_t"] = np.zeros((batch,), np.int32)
  return (x, np.zeros((batch,), np.int32)), kwargs


def _classifier_inputs(m: NoisyClassifier, batch: int):
  x = np.zeros((batch, m.image_size, m.image_size, m.in_channels), np.float32)
  return (x, np.zeros((batch,), np.int32)), {}


def _prior_inputs(m: DiffusionPrior, batch: int):
  z = np.zeros((batch, m.clip_dim), np.float32)
  tokens = np.zeros((batch, m.text_ctx, m.text_dim), np.float32)
  return (z, np.zeros((batch,), np.int32), z, tokens), {}


def _clip_inputs(m: CLIP, batch: int):
  images = np.zeros((batch, m.image_size, m.image_size, 3), np.float32)
  tokens = np.zeros((batch, m.text_ctx), np.int32)
  kwargs = {"t": np.zeros((batch,), np.int32)} if m.timestep_conditioned else {}
  return (images, tokens), kwargs


def _autoencoder_inputs(m, batch: int):
  return (np.zeros((batch, m.resolution, m.resolution, m.in_channels), np.float32),), {}


def _dalle_inputs(m: DalleTransformer, batch: int):
  text = np.zeros((batch, m.text_len), np.int32)
  return (text, np.ones((batch, m.text_len), bool), np.zeros((batch, m.image_len), np.int32)), {}


EXAMPLE_INPUTS: Dict[type, Callable[[Any, int], Tuple[tuple, dict]]] = {
    UNet: _unet_inputs,
    NoisyClassifier: _classifier_inputs,
    DiffusionPrior: _prior_inputs,
    CLIP: _clip_inputs,
    AutoencoderKL: _autoencoder_inputs,
    VQModel: _autoencoder_inputs,
    DalleTransformer: _dalle_inputs,
    DiscreteVAE: _autoencoder_inputs,
}


def example_inputs(module: nn.Module, batch: int = 1) -> Tuple[tuple, dict]:
  """(args, kwargs) of zeros that `module.init` accepts, as host (numpy) arrays: they stand for shapes (init,
  eval_shape), and each device array would compile a fill program of its own."""
  return EXAMPLE_INPUTS[type(module)](module, batch)


def count_params(config) -> int:
  """The number of parameters of the model a config section describes, without allocating them."""
  module = build(config)
  args, kwargs = example_inputs(module)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))

