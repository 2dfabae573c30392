"""EDM2's post-hoc EMA: the σ_rel ↔ γ map, and a reconstruction equal to an EMA tracked directly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.train import posthoc_ema


def test_sigma_rel_and_gamma_invert_at_edm2_values():
  # EDM2 §3.1: σ_rel 0.05 ↔ γ ≈ 16.97, σ_rel 0.10 ↔ γ ≈ 6.94.
  assert posthoc_ema.gamma_of(0.05) == pytest.approx(16.97, abs=0.01)
  assert posthoc_ema.gamma_of(0.10) == pytest.approx(6.94, abs=0.01)
  for sigma_rel in (0.01, 0.05, 0.13, 0.25):
    assert posthoc_ema.sigma_rel_of(posthoc_ema.gamma_of(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)
  with pytest.raises(ValueError, match=r"sigma_rel=0.3: a power-function EMA's length lies in \(0, 0.289\)"):
    posthoc_ema.gamma_of(0.3)


def test_profile_inner_is_the_integral():
  tau = np.linspace(0, 700, 700_001)
  p = lambda t, g: np.where(tau <= t, (g + 1) * tau**g / t ** (g + 1), 0.0)  # noqa: E731
  numeric = np.trapezoid(p(400.0, 6.94) * p(700.0, 16.97), tau)
  assert posthoc_ema.profile_inner(400.0, 6.94, 700.0, 16.97) == pytest.approx(numeric, rel=1e-4)
  assert posthoc_ema.profile_inner(700.0, 16.97, 400.0, 6.94) == pytest.approx(numeric, rel=1e-4)


def test_reconstruction_equals_an_ema_tracked_directly(tmp_path):
  """Params on a noisy drift over 2,000 steps; profiles 0.05 and 0.10 snapshot every 100 steps. The EMA of length
  0.075 reconstructed from them at the last step equals the one tracked alongside, to 1% of how far that EMA sits
  from the final params (the quantity an EMA is for)."""
  rng = np.random.default_rng(0)
  steps, every = 2000, 100
  drift = np.cumsum(rng.normal(size=(steps, 64)) * 0.1 + 0.02, axis=0).astype(np.float32)
  tracked = (0.05, 0.10)
  gammas = tuple(posthoc_ema.gamma_of(s) for s in tracked + (0.075,))
  profiles = tuple({"w": jnp.zeros(64)} for _ in gammas)
  update = jax.jit(lambda prof, p, step: posthoc_ema.update(prof, p, step, gammas))
  for step in range(steps):
    profiles = update(profiles, {"w": jnp.asarray(drift[step])}, jnp.int32(step))
    if (step + 1) % every == 0:
      posthoc_ema.write_snapshot(str(tmp_path), step + 1, tracked, profiles[:2])
  rebuilt, coefficients, at = posthoc_ema.reconstruct(str(tmp_path), 0.075)
  assert at == steps and len(coefficients) == 2 * steps // every
  direct = np.asarray(profiles[2]["w"])
  error = np.linalg.norm(rebuilt["w"] - direct) / np.linalg.norm(direct - drift[-1])
  assert error < 0.01, error
  # A length outside the two tracked ones is reconstructed too, and differs from both.
  longer, _, _ = posthoc_ema.reconstruct(str(tmp_path), 0.2)
  assert np.linalg.norm(longer["w"] - np.asarray(profiles[1]["w"])) > 10 * np.linalg.norm(rebuilt["w"] - direct)


def test_no_snapshots_is_one_line(tmp_path):
  with pytest.raises(ValueError, match="has no post-hoc EMA snapshots; train with train.posthoc_ema set"):
    posthoc_ema.reconstruct(str(tmp_path), 0.08)
