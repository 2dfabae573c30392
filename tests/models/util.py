"""Helpers for the model tests."""

import jax


def randomize(params, key, scale=0.05):
  """Every parameter perturbed, so zero-initialised layers no longer hide a path."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
