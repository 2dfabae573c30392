"""Helpers for the model tests."""

import jax
import jax.numpy as jnp
import numpy as np


def random_params(model, key, *args, scale=0.05, **kwargs):
  """Params of `model` drawn directly (shapes from jax.eval_shape, so init is never
  compiled): norm scales 1 + scale·N(0, 1), everything else scale·N(0, 1).

  Drawn in numpy, seeded by `key`: an eager jax.random.normal per leaf would compile a program for every
  distinct leaf shape (dozens per U-Net).
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))
  flat, tree = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
  leaves = []
  for path, leaf in flat:
    noise = scale * rng.standard_normal(leaf.shape, np.float32)
    leaves.append(jnp.asarray(noise + 1.0 if getattr(path[-1], "key", None) == "scale" else noise, leaf.dtype))
  return jax.tree.unflatten(tree, leaves)
