"""Guidance: classifier-free, classifier (mean and score forms), dynamic thresholding, inpainting.

Each piece is a pure function or wraps a `denoise_fn(x_t, t, cond) -> model_output`,
so it composes with every sampler in samplers.py. Shapes: x_t [B, ..., C]; a
model output is [B, ..., C] or, with learned variance, [B, ..., 2C] (mean part
first); t int32 [B].
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion.schedules import Schedule, extract

DenoiseFn = Callable[[jax.Array, jax.Array, object], jax.Array]


def as_pytree_fn(fn):
  """`fn` as a jax.tree_util.Partial, so it can be a (non-static) argument of jit.

  A Partial's bound arguments are pytree leaves: `Partial(apply_fn, params)` lets
  a jitted sampler take new params without recompiling and without baking them
  into the program as constants. A plain function becomes a Partial with no
  bound arguments (whatever it closes over is then a compile-time constant).
  """
  if fn is None or isinstance(fn, Partial):
    return fn
  return Partial(fn)


def _per_example_std(x: jax.Array) -> jax.Array:
  return jnp.std(x, axis=tuple(range(1, x.ndim)), keepdims=True)


def rescale_guidance(guided: jax.Array, cond: jax.Array, rescale: float) -> jax.Array:
  """Guidance rescale (Lin et al., 2024, eq. 15-16): pulls the guided prediction's
  per-example std back to the conditional one's, blended with weight `rescale`."""
  rescaled = guided * (_per_example_std(cond) / _per_example_std(guided))
  return rescale * rescaled + (1.0 - rescale) * guided


def _concat_with_null(cond, null_cond):
  """Leafwise [cond; null] along the batch axis; null leaves may have batch 1. A dict cond's entries that
  the null does not name (a super-resolution model's low_res, an inpainting model's image and mask) are
  not guided on: both halves get the cond's value."""

  def join(c, u):
    u = jnp.broadcast_to(jnp.asarray(u, c.dtype), c.shape)
    return jnp.concatenate([c, u], axis=0)

  if isinstance(cond, dict) and isinstance(null_cond, dict):
    null_cond = {k: null_cond[k] if k in null_cond else v for k, v in cond.items()}
  return jax.tree.map(join, cond, null_cond)


def _guided_apply(denoise_fn, guidance_scale, null_cond, rescale, x_t, t, cond):
  both = denoise_fn(
      jnp.concatenate([x_t, x_t], axis=0), jnp.concatenate([t, t], axis=0), _concat_with_null(cond, null_cond)
  )
  out_cond, out_uncond = jnp.split(both, 2, axis=0)
  c = x_t.shape[-1]
  mean_cond, mean_uncond = out_cond[..., :c], out_uncond[..., :c]
  guided = mean_uncond + guidance_scale * (mean_cond - mean_uncond)
  guided = jnp.where(rescale > 0, rescale_guidance(guided, mean_cond, rescale), guided)
  return jnp.concatenate([guided.astype(out_cond.dtype), out_cond[..., c:]], axis=-1)


def classifier_free(denoise_fn: DenoiseFn, guidance_scale: float, null_cond, rescale: float = 0.0) -> Partial:
  """Wraps `denoise_fn` with classifier-free guidance (Ho & Salimans, 2022).

  The conditional and unconditional halves run as one batch [cond; null]. On the
  mean channels: uncond + w·(cond − uncond); the variance channels (if any) come
  from the conditional half, as GLIDE does. w = 1 is the conditional model.

  Args:
    denoise_fn: (x_t [B, ..., C], t [B], cond) -> [B, ..., C or 2C].
    guidance_scale: w.
    null_cond: a pytree shaped like cond (leading dim B or 1): the "empty"
      condition (null label, empty caption tokens, zero embedding); for a dict
      cond, the entries it leaves out are shared by both halves.
    rescale: guidance-rescale weight φ in [0, 1]; 0 disables it.

  Returns:
    A denoise_fn of the same signature, as a Partial whose scale, null condition
    and inner function's bound params are pytree leaves (changing them does not
    recompile a jitted sampler).
  """
  return Partial(_guided_apply, as_pytree_fn(denoise_fn), guidance_scale, null_cond, rescale)


def condition_mean(out: dict, grad: jax.Array) -> dict:
  """Classifier guidance for ancestral sampling (Dhariwal & Nichol, Alg. 1).

  Shifts the reverse-step mean by Σ·∇log p(y|x_t): `grad` is that gradient,
  already multiplied by the guidance scale, like x_t. `out` is p_mean_variance's dict.
  """
  return {**out, "mean": out["mean"] + out["variance"] * grad}


def condition_score(s: Schedule, out: dict, x_t: jax.Array, t: jax.Array, grad: jax.Array) -> dict:
  """Classifier guidance through the score, for DDIM and the ODE samplers (Alg. 2).

  eps ← eps − sqrt(1−ᾱ_t)·∇log p(y|x_t); x0 and the mean are recomputed from it
  (no re-clipping, as in guided-diffusion). `grad` is scaled, like x_t.
  """
  eps = gaussian.eps_from_x0(s, x_t, t, out["pred_x0"])
  eps = eps - extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * grad
  pred_x0 = gaussian.x0_from_eps(s, x_t, t, eps)
  mean, _, _ = gaussian.q_posterior(s, pred_x0, x_t, t)
  return {**out, "pred_x0": pred_x0, "mean": mean}


def dynamic_threshold(x0: jax.Array, percentile: float = 0.995) -> jax.Array:
  """Imagen's dynamic thresholding of an x0 prediction [B, ...].

  s = the `percentile` quantile of |x0| per example, at least 1; x0 is clipped
  to [−s, s] and divided by s. Pass as a sampler's denoised_fn.
  """
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0)
  s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.clip(x0, -s, s) / s


def paste_known(x: jax.Array, known: jax.Array, mask: jax.Array) -> jax.Array:
  """mask·known + (1 − mask)·x; mask is 1 on known pixels, broadcastable to x."""
  return mask * known + (1.0 - mask) * x
