"""Helpers for the model tests."""

import jax


def random_params(model, key, *args, scale=0.05, **kwargs):
  """Params of `model` drawn directly (shapes from jax.eval_shape, so init is never
  compiled): norm scales 1 + scale·N(0, 1), everything else scale·N(0, 1)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  keys = jax.random.split(key, len(flat))
  leaves = []
  for (path, leaf), k in zip(flat, keys):
    noise = scale * jax.random.normal(k, leaf.shape, leaf.dtype)
    leaves.append(noise + 1.0 if getattr(path[-1], "key", None) == "scale" else noise)
  return jax.tree.unflatten(jax.tree.structure(shapes), leaves)
