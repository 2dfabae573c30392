"""FID: the Fréchet distance against closed forms and scipy, and the oracle embedding on renders."""

import numpy as np
import pytest
import scipy.linalg

from t2i_jax.data import shapes
from t2i_jax.eval import fid
from t2i_jax.eval.train_oracle import EVAL_BLUR, EVAL_NOISE, degrade


def _random_cov(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d))
  return a @ a.T / d


def test_diagonal_covariances_match_the_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
  a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), want, rtol=1e-10)


def test_general_covariances_match_scipy_sqrtm():
  rng = np.random.default_rng(1)
  for d in (3, 16):
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    assert not np.allclose(s1 @ s2, s2 @ s1)  # non-commuting: no shortcut applies
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-8)


def test_identical_sets_give_zero_and_mean_shift_gives_its_square():
  rng = np.random.default_rng(2)
  f = rng.standard_normal((50, 8)) @ rng.standard_normal((8, 8))
  assert abs(fid.fid_from_features(f, f)) < 1e-8
  shift = np.arange(8) * 0.1
  np.testing.assert_allclose(fid.fid_from_features(f, f + shift), shift @ shift, rtol=1e-7)


def test_rank_deficient_covariances_stay_finite():
  # Fewer samples than dimensions, as with small sample sets: singular covariances.
  rng = np.random.default_rng(3)
  s1, s2 = _random_cov(rng, 20, rank=4), _random_cov(rng, 20, rank=5)
  value = fid.frechet_distance(np.zeros(20), s1, np.zeros(20), s2)
  want = np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
  assert np.isfinite(value) and value >= 0.0
  np.testing.assert_allclose(value, want, rtol=1e-5)


def test_bad_statistics_raise():
  with pytest.raises(ValueError, match="dimensions differ"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match="\\[D, D\\]"):
    fid.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="N >= 2"):
    fid.statistics(np.zeros((1, 4)))


def test_fid_chunks_through_a_pluggable_feature_fn():
  rng = np.random.default_rng(4)
  a, b = rng.random((37, 4, 4, 3)), rng.random((29, 4, 4, 3)) + 0.2
  mean_colour = lambda x: x.mean(axis=(1, 2))
  whole = fid.fid_from_features(mean_colour(a), mean_colour(b))
  np.testing.assert_allclose(fid.fid(mean_colour, a, b, batch_size=8), whole, rtol=1e-12)
  assert whole > 0.1


@pytest.fixture(scope="module")
def oracle_fn():
  return fid.oracle_feature_fn()


def test_oracle_fid_separates_renders_from_degraded_renders_and_noise(oracle_fn):
  a, _, _ = shapes.render_batch("test", 0, 0, 256, 32)
  b, _, _ = shapes.render_batch("test", 1, 0, 256, 32)  # same distribution, other scenes
  degraded = degrade(b, EVAL_NOISE, EVAL_BLUR, np.random.default_rng(0))
  noise = np.random.default_rng(5).integers(0, 256, a.shape, dtype=np.uint8)
  feats = {k: fid.embed(oracle_fn, x) for k, x in (("a", a), ("b", b), ("degraded", degraded), ("noise", noise))}
  same = fid.fid_from_features(feats["a"], feats["b"])
  blurred = fid.fid_from_features(feats["a"], feats["degraded"])
  different = fid.fid_from_features(feats["a"], feats["noise"])
  # Measured 679 / 1180 / 15104; what remains of `same` is mostly the small-sample bias (256 images, D = 256).
  assert same < 1.4 * 679 and blurred > 1.3 * same and different > 15 * same, (same, blurred, different)
