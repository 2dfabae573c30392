"""What every converter shares: reading a checkpoint file, the layout changes, a strict assignment, the model a
config builds and its expected params, and the mappings of layers that several sources hold.

A converter names each of our params with the source key it comes from and the layout change it needs
(`Assignment.take`, or a whole layer at once: `Assignment.dense`, `conv`, `group_norm`, `layer_norm`,
`transformer_block`). `Assignment.params` then checks the result against the shapes our model expects
(`expected_params`): a missing or unexpected name, a shape mismatch, or a source key nobody used is refused with
one ValueError that names the first offender and both shapes, and lists the rest. Nothing is matched by order or
guessed.
"""

import dataclasses
import os
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import jax
import numpy as np
from flax import traverse_util

from t2i_jax import models
from t2i_jax.train.state import split_variables

StateDict = Dict[str, np.ndarray]
# A head count, or heads(C) -> the count at width C (a U-Net's attention: num_head_channels per head).
Heads = Union[int, Callable[[int], int]]


def read_state_dict(path: str) -> StateDict:
  """{key: float32/int numpy array} of a checkpoint file: .safetensors (no torch needed), .npz, or a PyTorch
  pickle (.pt, .pth, .bin, .ckpt; needs torch). A {"state_dict": ...} or {"model": ...} wrapper is opened.

  A truncated or damaged file, or a pickle that is not a dict of tensors (a whole pickled module, an optimizer
  state), is refused with one ValueError naming the file; nothing of it is executed (weights_only).
  """
  if not os.path.exists(path):
    raise ValueError(f"{path}: no such checkpoint file.")
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import load_file
      return dict(load_file(path))
    if path.endswith(".npz"):
      with np.load(path) as data:
        return {k: data[k] for k in data.files}
  except Exception as error:  # pylint: disable=broad-except  (each library raises its own kind)
    raise ValueError(f"{path} cannot be read ({type(error).__name__}: {error}); the file is truncated or "
                     "damaged: download it again.") from None
  try:
    import torch
  except ImportError:
    raise ValueError(f"{path} is a PyTorch pickle, which needs torch to read: pip install torch, or convert it to "
                     ".safetensors first (safetensors.torch.save_file).") from None
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # pylint: disable=broad-except  (zip, pickle and the weights-only unpickler's errors)
    raise ValueError(f"{path} is not a readable PyTorch state dict ({type(error).__name__}); it is truncated, or "
                     "pickles more than tensors (a whole module: save its state_dict() instead).") from None
  for wrapper in ("state_dict", "model"):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
    raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors (or one under "
                     "'state_dict' or 'model'); give the model's state_dict() file.")
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in loaded.items()}


@dataclasses.dataclass(frozen=True)
class Source:
  """A checkpoint format (convert.SOURCES).

  Attributes:
    convert: (state_dict, config) -> our params for config.model.
    help: what --checkpoint names, and the config it goes with.
    read: --checkpoint's value -> the state dict (default: one file, `read_state_dict`).
    config: (--checkpoint's value, a copy of --config or None) -> the config to convert for, for a format that
      records or implies more than the params (its architecture, its tokenizer, its timestep scaling); None:
      --config as given.
  """
  convert: Callable
  help: str
  read: Callable = read_state_dict
  config: Optional[Callable] = None


# --- our model --------------------------------------------------------------------------------------------------

def build(config, cls: type):
  """The module that `config` (a config with a `model` section, or the section itself) builds, refused unless it
  is a `cls` (the class the calling converter fills)."""
  section = config["model"] if "model" in config else config
  fractional = [m for m in section.get("channel_mult", ()) if m != int(m)]
  if fractional:
    # guided-diffusion's 512x512 models start at 0.5·model_channels (int() of it); our modules take whole
    # multipliers only, so there is no config of ours for them.
    raise ValueError(f"channel_mult={tuple(section['channel_mult'])}: our {section.get('name')} takes whole channel "
                     "multipliers only (guided-diffusion's 512x512 models, with 0.5, cannot be converted).")
  model = models.build(section)
  if not isinstance(model, cls):
    name = next(n for n, c in models.MODELS.items() if c is cls)
    raise ValueError(f"model name={section.get('name')!r} builds a {type(model).__name__}; this converter fills a "
                     f"{cls.__name__} (name={name!r}): use the config of one.")
  return model


def expected_params(model) -> dict:
  """The model's params as ShapeDtypeStructs (jax.eval_shape of init on example inputs: no memory spent)."""
  args, kwargs = models.example_inputs(model, 1)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))
  return split_variables(variables)[0]


def flat(tree) -> dict:
  """{"/"-joined name ("input_conv/kernel"): leaf} of a params tree."""
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


# --- layouts: PyTorch's on the left, Flax's on the right ------------------------------------------------------

def conv(w: np.ndarray) -> np.ndarray:
  """A conv kernel [O, I, *k] (conv1d, conv2d) -> [*k, I, O] (Flax's HWIO)."""
  return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def linear(w: np.ndarray) -> np.ndarray:
  """A Linear weight [O, I] -> a Dense kernel [I, O]; a 1x1 conv1d weight [O, I, 1] likewise."""
  return np.transpose(w.reshape(w.shape[0], -1))


def same(w: np.ndarray) -> np.ndarray:
  return w


def heads_last(w: np.ndarray, parts: int, heads: int, order: str) -> np.ndarray:
  """A fused projection's output axis [..., parts·C] regrouped as ours reads it.

  order "parts-heads": the source lays out (part, head, dim), as a PyTorch Linear to q|k|v does;
  order "heads-parts": (head, part, dim), as OpenAI's QKVAttentionLegacy reads a 1x1 conv's output.
  Ours reshapes to (heads, parts, dim) (models.layers.AttentionBlock); returns the source's axis permuted so.
  """
  lead, total = w.shape[:-1], w.shape[-1]
  dim = total // (parts * heads)
  if order == "heads-parts":
    return w
  if order != "parts-heads":
    raise ValueError(f"order={order!r}: use 'parts-heads' or 'heads-parts'.")
  return w.reshape(lead + (parts, heads, dim)).swapaxes(-3, -2).reshape(lead + (total,))


def fused(parts: int, heads: Heads, order: str, key: str) -> Callable[[np.ndarray], np.ndarray]:
  """A layout: the output axis [..., parts·C] of the source key `key` regrouped by `heads_last`.

  heads: the config's head count, or heads(C) of the source's own width C, so that a checkpoint of another
  width is refused by Assignment's shape check, which names both shapes.
  """

  def regroup(w):
    count = heads(w.shape[-1] // parts) if callable(heads) else heads
    if not count or w.shape[-1] % (parts * count):
      raise ValueError(f"{key} has shape {tuple(w.shape)}: {w.shape[-1]} channels do not split into {parts} parts "
                       f"of {count} heads; the head count in the config must be the checkpoint's.")
    return heads_last(w, parts, count, order)

  return regroup


class Assignment:
  """Our params, filled key by key from a source state dict.

  ours: "/"-joined paths into our params tree ("input_conv/kernel"); theirs: the source's keys, or for a whole
  layer the prefix its keys share ("out.2" for out.2.weight and out.2.bias).
  """

  def __init__(self, source: StateDict, where: str):
    self.source = source
    self.where = where
    self.flat: Dict[str, np.ndarray] = {}
    self.used = set()

  def get(self, theirs: str, ours: str) -> np.ndarray:
    """The source array under `theirs` (for our `ours`, which the refusal names), not yet marked used."""
    if theirs not in self.source:
      raise ValueError(f"{self.where}: the checkpoint has no {theirs!r} (for our {ours!r}); it is not the "
                       "architecture this converter reads, or of another config.")
    return np.asarray(self.source[theirs])

  def take(self, ours: str, theirs: str, layout: Callable[[np.ndarray], np.ndarray] = same) -> None:
    self.put(ours, layout(self.get(theirs, ours)), theirs)

  def put(self, ours: str, value: np.ndarray, *theirs: str) -> None:
    """Sets our param from already-converted values of the source keys `theirs` (a split or a concatenation)."""
    if ours in self.flat:
      raise ValueError(f"{self.where}: our {ours!r} is assigned twice; the name map is wrong.")
    self.flat[ours] = np.asarray(value)
    self.used.update(theirs)

  # --- one layer: its params from the source keys under one prefix -------------------------------------------

  def dense(self, ours: str, theirs: str, fuse: Optional[Tuple[int, Heads, str]] = None, weight: str = "weight",
            bias: str = "bias") -> None:
    """A Linear or 1x1 conv1d ({theirs}.{weight} [O, I(, 1)], {theirs}.{bias} [O]) into a Dense.

    fuse: (parts, heads, order) of a fused projection (q|k|v, k|v): its output axis regrouped (`fused`).
    weight, bias: the source's names (CLIP's Affine in GLIDE: "w", "b").
    """
    for name, key, layout in (("kernel", f"{theirs}.{weight}", linear), ("bias", f"{theirs}.{bias}", same)):
      regroup = same if fuse is None else fused(*fuse, key)
      self.put(f"{ours}/{name}", regroup(layout(self.get(key, f"{ours}/{name}"))), key)

  def conv(self, ours: str, theirs: str) -> None:
    """A conv ({theirs}.weight [O, I, *k], {theirs}.bias [O]) into a Conv."""
    self.take(f"{ours}/kernel", f"{theirs}.weight", conv)
    self.take(f"{ours}/bias", f"{theirs}.bias")

  def group_norm(self, ours: str, theirs: str) -> None:
    """A GroupNorm into ours (layers' float32 GroupNorm wrapper: {ours}/GroupNorm_0)."""
    self.take(f"{ours}/GroupNorm_0/scale", f"{theirs}.weight")
    self.take(f"{ours}/GroupNorm_0/bias", f"{theirs}.bias")

  def layer_norm(self, ours: str, theirs: str, gain: str = "weight", bias: str = "bias") -> None:
    """A LayerNorm into ours (layers.LayerNorm32: {ours}/LayerNorm_0); gain, bias: the source's names."""
    self.take(f"{ours}/LayerNorm_0/scale", f"{theirs}.{gain}")
    self.take(f"{ours}/LayerNorm_0/bias", f"{theirs}.{bias}")

  def params(self, expected, ignore: Iterable[str] = ()) -> dict:
    """Our params tree, checked against `expected` (the model's params or their ShapeDtypeStructs).

    ignore: source keys that are not params of ours (buffers such as a position-ids table), named
      explicitly; any other source key left unused is an error.
    """
    want = flat(expected)
    for name, value in self.flat.items():
      if name not in want:
        raise ValueError(f"{self.where}: our model has no param {name!r} (converted with shape {value.shape}); "
                         "the model config does not match the checkpoint's architecture.")
      if tuple(value.shape) != tuple(want[name].shape):
        raise ValueError(f"{self.where}: {name!r} has shape {tuple(want[name].shape)} in our model but "
                         f"{tuple(value.shape)} from the checkpoint; the model config does not match the checkpoint.")
    missing = sorted(set(want) - set(self.flat))
    if missing:
      raise ValueError(f"{self.where}: no value for {len(missing)} of our params, first {missing[0]!r} "
                       f"(all: {', '.join(missing)}).")
    unused = sorted(set(self.source) - self.used - set(ignore))
    if unused:
      raise ValueError(f"{self.where}: {len(unused)} checkpoint key(s) unused, first {unused[0]!r} "
                       f"(all: {', '.join(unused)}); the checkpoint holds more than this model config.")
    # Cast where the dtype differs (a float16 checkpoint); a float32 value stays the (possibly strided) view the
    # layout made of the source array, with no copy.
    return traverse_util.unflatten_dict({tuple(k.split("/")): v.astype(want[k].dtype, copy=False)
                                         for k, v in self.flat.items()})


def transformer_block(a: Assignment, ours: str, heads: int, ln_1: str, qkv: Union[str, Sequence[str]], c_proj: str,
                      ln_2: str, c_fc: str, mlp_proj: str, *, norm: Tuple[str, str] = ("weight", "bias"),
                      linear_names: Tuple[str, str] = ("weight", "bias"), key_bias: bool = True) -> None:
  """Our layers.TransformerBlock at `ours` (ln_1, c_qkv, c_proj, ln_2, c_fc, mlp_proj) from a pre-LayerNorm
  block whose layers stand under the source prefixes given, in that order.

  qkv: one prefix, a fused Linear [3W, W] whose output the source reads as (head, q|k|v, dim), ours too (GLIDE's
    xf.py); or three, the q, k and v Linears [W, W] apart (CLIP's), concatenated to [W, 3W] and regrouped.
  norm, linear_names: the source's (gain, bias) names of its LayerNorms and (weight, bias) of its Linears.
  key_bias: False where the source's k projection has none (GLIDE's noised CLIP): ours is then zero.
  """
  weight, bias = linear_names
  a.layer_norm(f"{ours}/ln_1", ln_1, *norm)
  if isinstance(qkv, str):
    a.dense(f"{ours}/c_qkv", qkv, fuse=(3, heads, "heads-parts"), weight=weight, bias=bias)
  else:
    _qkv_apart(a, f"{ours}/c_qkv", qkv, heads, weight, bias, key_bias)
  a.dense(f"{ours}/c_proj", c_proj, weight=weight, bias=bias)
  a.layer_norm(f"{ours}/ln_2", ln_2, *norm)
  a.dense(f"{ours}/c_fc", c_fc, weight=weight, bias=bias)
  a.dense(f"{ours}/mlp_proj", mlp_proj, weight=weight, bias=bias)


def _qkv_apart(a: Assignment, ours: str, prefixes: Sequence[str], heads: int, weight: str, bias: str,
               key_bias: bool) -> None:
  """q, k, v Linears apart ([W, W] weights, [W] biases) -> our fused head-major Dense ([W, 3W], [3W])."""
  for kind, name, layout in (("kernel", weight, linear), ("bias", bias, same)):
    keys = [f"{p}.{name}" for p in prefixes]
    if kind == "bias" and not key_bias:
      del keys[1]
    values = [a.get(key, f"{ours}/{kind}") for key in keys]
    shapes = [v.shape for v in values]
    if len(set(shapes)) != 1:
      raise ValueError(f"{a.where}: {', '.join(f'{n!r} {s}' for n, s in zip(keys, shapes))} differ in shape; "
                       "q, k and v projections must match.")
    parts = [layout(v) for v in values]
    if len(parts) == 2:
      # No key bias: a key bias adds q·b_k to all of a query's logits alike, which softmax ignores; zero is exact
      # (and what training it would keep: GLIDE zeroes that gradient too).
      parts.insert(1, np.zeros_like(parts[0]))
    # Concatenated, q|k|v is (part, head, dim); ours reads (head, part, dim).
    a.put(f"{ours}/{kind}", fused(3, heads, "parts-heads", keys[0])(np.concatenate(parts, axis=-1)), *keys)
