"""What every converter shares: reading a checkpoint file, the layout changes, and a strict assignment.

A converter names each of our params with the source key it comes from and the layout change it needs
(`Assignment.take`). `Assignment.params` then checks the result against the shapes our model expects:
a missing or unexpected name, a shape mismatch, or a source key nobody used is refused with one
ValueError that names the first offender and both shapes, and lists the rest. Nothing is matched by
order or guessed.
"""

import os
from typing import Callable, Dict, Iterable

import numpy as np
from flax import traverse_util

StateDict = Dict[str, np.ndarray]


def read_state_dict(path: str) -> StateDict:
  """{key: float32/int numpy array} of a checkpoint file: .safetensors (no torch needed), .npz, or a PyTorch
  pickle (.pt, .pth, .bin, .ckpt; needs torch). A {"state_dict": ...} or {"model": ...} wrapper is opened."""
  if not os.path.exists(path):
    raise ValueError(f"{path}: no such checkpoint file.")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if path.endswith(".npz"):
    with np.load(path) as data:
      return {k: data[k] for k in data.files}
  try:
    import torch
  except ImportError:
    raise ValueError(f"{path} is a PyTorch pickle, which needs torch to read: pip install torch, or convert it to "
                     ".safetensors first (safetensors.torch.save_file).") from None
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  for wrapper in ("state_dict", "model"):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in loaded.items()}


# --- layouts: PyTorch's on the left, Flax's on the right ------------------------------------------------------

def conv(w: np.ndarray) -> np.ndarray:
  """A conv kernel [O, I, *k] (conv1d, conv2d) -> [*k, I, O] (Flax's HWIO)."""
  return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def linear(w: np.ndarray) -> np.ndarray:
  """A Linear weight [O, I] -> a Dense kernel [I, O]; a 1x1 conv1d weight [O, I, 1] likewise."""
  return np.transpose(w.reshape(w.shape[0], -1))


def same(w: np.ndarray) -> np.ndarray:
  return w


class Assignment:
  """Our params, filled key by key from a source state dict.

  ours: "/"-joined paths into our params tree ("input_conv/kernel").
  """

  def __init__(self, source: StateDict, where: str):
    self.source = source
    self.where = where
    self.flat: Dict[str, np.ndarray] = {}
    self.used = set()

  def take(self, ours: str, theirs: str, layout: Callable[[np.ndarray], np.ndarray] = same) -> None:
    if theirs not in self.source:
      raise ValueError(f"{self.where}: the checkpoint has no {theirs!r} (for our {ours!r}); it is not the "
                       "architecture this converter reads, or of another config.")
    self.put(ours, layout(np.asarray(self.source[theirs])), theirs)

  def put(self, ours: str, value: np.ndarray, *theirs: str) -> None:
    """Sets our param from already-converted values of the source keys `theirs` (a split or a concatenation)."""
    if ours in self.flat:
      raise ValueError(f"{self.where}: our {ours!r} is assigned twice; the name map is wrong.")
    self.flat[ours] = np.asarray(value)
    self.used.update(theirs)

  def params(self, expected, ignore: Iterable[str] = ()) -> dict:
    """Our params tree, checked against `expected` (the model's params or their ShapeDtypeStructs).

    ignore: source keys that are not params of ours (buffers such as a position-ids table), named
      explicitly; any other source key left unused is an error.
    """
    want = {"/".join(k): v for k, v in traverse_util.flatten_dict(expected).items()}
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
    return traverse_util.unflatten_dict({tuple(k.split("/")): v.astype(want[k].dtype) for k, v in self.flat.items()})


def prefixed(source: StateDict, prefix: str) -> StateDict:
  """The entries of source under `prefix` ("model."), with it removed: a sub-model's state dict."""
  return {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}


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
