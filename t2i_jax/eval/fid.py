"""Fréchet distance between Gaussians fitted to image features (FID), with a pluggable embedding.

FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).

The standard FID embeds images with Inception-v3, whose weights nothing here
ships offline, so `fid` takes any `feature_fn(images) -> [n, D]`;
`oracle_feature_fn` gives the shapes oracle's penultimate layer, a
domain-specific embedding for captioned-shapes samples. Numbers from different
feature functions (or sample counts: FID is biased upward for small N) are not
comparable with each other or with published Inception FIDs.

All statistics are float64 numpy.
"""

from typing import Callable, Optional, Tuple

import numpy as np

FeatureFn = Callable[[np.ndarray], np.ndarray]


def _as_stats(mu, sigma, name: str) -> Tuple[np.ndarray, np.ndarray]:
  mu, sigma = np.atleast_1d(np.asarray(mu, np.float64)), np.atleast_2d(np.asarray(sigma, np.float64))
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"{name}: mean must be [D] and covariance [D, D], got {mu.shape} and {sigma.shape}.")
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise ValueError(f"{name}: statistics contain NaN or inf; check the features they came from.")
  return mu, 0.5 * (sigma + sigma.T)  # rounding can leave a covariance a hair off symmetric


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(sigma)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues
  of S1^(1/2) S2 S1^(1/2), which is similar to S1 S2 but symmetric positive
  semi-definite, so an eigendecomposition is stable (unlike a general matrix
  square root of the non-symmetric S1 S2, which goes complex on rank-deficient
  covariances). Eigenvalues that rounding pushes below zero are clipped.

  Args:
    mu1, mu2: means [D].
    sigma1, sigma2: covariances [D, D].

  Returns:
    The distance as a Python float, >= 0.
  """
  mu1, sigma1 = _as_stats(mu1, sigma1, "first")
  mu2, sigma2 = _as_stats(mu2, sigma2, "second")
  if mu1.shape != mu2.shape:
    raise ValueError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}; use one feature function "
                     "for both sets.")
  root1 = _psd_sqrt(sigma1)
  inner = root1 @ sigma2 @ root1
  tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0.0, None)))
  diff = mu1 - mu2
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
  return float(max(value, 0.0))


def statistics(features) -> Tuple[np.ndarray, np.ndarray]:
  """features [N, D] -> (mean [D], unbiased covariance [D, D]), float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"statistics need features [N, D] with N >= 2, got shape {f.shape}.")
  return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def fid_from_features(features_a, features_b) -> float:
  """FID between two feature sets [N_a, D] and [N_b, D]."""
  return frechet_distance(*statistics(features_a), *statistics(features_b))


def embed(feature_fn: FeatureFn, images, batch_size: int = 256) -> np.ndarray:
  """feature_fn applied to images [N, ...] in chunks of batch_size -> float64 [N, D]."""
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be at least 1.")
  parts = [np.asarray(feature_fn(images[lo:lo + batch_size]), np.float64) for lo in range(0, len(images), batch_size)]
  if not parts:
    raise ValueError("no images to embed.")
  out = np.concatenate(parts)
  if out.ndim != 2 or out.shape[0] != len(images):
    raise ValueError(f"feature_fn must map n images to [n, D]; got {out.shape} for {len(images)} images.")
  return out


def fid(feature_fn: FeatureFn, images_a, images_b, batch_size: int = 256) -> float:
  """FID between two image sets [N_a, H, W, C] and [N_b, H', W', C] under feature_fn.

  Args:
    feature_fn: maps a chunk of images [n, ...] to features [n, D], e.g.
      `oracle_feature_fn()`.
    images_a, images_b: image arrays in whatever format feature_fn takes.
    batch_size: images per feature_fn call.
  """
  return fid_from_features(embed(feature_fn, images_a, batch_size), embed(feature_fn, images_b, batch_size))


def oracle_feature_fn(path: Optional[str] = None, batch_size: int = 256) -> FeatureFn:
  """The shapes oracle's penultimate features: images (uint8 or [-1, 1], side 16..64) -> float32 [n, D].

  Loads the weights once (the shipped asset unless `path` is given).
  """
  from t2i_jax.eval import oracle  # jax and flax load only when this embedding is asked for

  module, params = oracle.load_oracle(path)
  return lambda images: oracle.features(module, params, images, batch_size)
