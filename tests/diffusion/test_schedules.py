"""Beta schedules, the Schedule pytree and respacing against the reference formulas.

`reference.py` restates improved-diffusion in naive float64 numpy; it was checked
against the real PyTorch code (float64), where its betas, ᾱ and posterior
constants agree to 2e-16 and its space_timesteps/respacing exactly.
"""

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import schedules
from tests.diffusion import reference

# Outputs of improved_diffusion.respace.space_timesteps (the real code), as
# (length, sum, sum of squares, sorted steps or (first five, last five)).
REFERENCE_SPACINGS = {
    (300, "10,15,20"): (45, 7727, 1646839, [
        0, 11, 22, 33, 44, 55, 66, 77, 88, 99, 100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171,
        178, 185, 192, 199, 200, 205, 210, 216, 221, 226, 231, 236, 242, 247, 252, 257, 263, 268, 273,
        278, 283, 289, 294, 299]),
    (1000, "ddim50"): (50, 24500, 16170000, list(range(0, 1000, 20))),
    (1000, "250"): (250, 124875, 83340681, ([0, 4, 8, 12, 16], [983, 987, 991, 995, 999])),
    (1000, "ddim25"): (25, 12000, 7840000, list(range(0, 1000, 40))),
    (4000, "10,10,10"): (30, 59995, 160956055, [
        0, 148, 296, 444, 592, 741, 889, 1037, 1185, 1333, 1334, 1482, 1630, 1778, 1926, 2074, 2222,
        2370, 2518, 2666, 2667, 2815, 2963, 3111, 3259, 3407, 3555, 3703, 3851, 3999]),
    (1000, "27"): (27, 13486, 9154550, [
        0, 38, 77, 115, 154, 192, 231, 269, 307, 346, 384, 423, 461, 499, 538, 576, 615, 653, 692,
        730, 768, 807, 845, 884, 922, 961, 999]),
    (100, "1,2,3,4"): (10, 608, 45442, [0, 25, 49, 50, 62, 74, 75, 83, 91, 99]),
    (1000, "100,50,25,10"): (185, 55533, 26959523, ([0, 3, 5, 8, 10], [888, 916, 944, 971, 999])),
}


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


# ----------------------------------------------------------------------------
# Named beta schedules.


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("num_timesteps", [1000, 100, 4000])
def test_beta_schedule_matches_reference(name, num_timesteps):
  got = schedules.beta_schedule(name, num_timesteps)
  assert got.dtype == np.float64 and got.shape == (num_timesteps,)
  np.testing.assert_allclose(got, reference.beta_schedule(name, num_timesteps), rtol=1e-13, atol=0)


@pytest.mark.parametrize("num_timesteps", [1000, 250, 4000])
def test_linear_endpoints_scale_with_num_timesteps(num_timesteps):
  betas = schedules.beta_schedule("linear", num_timesteps)
  scale = 1000.0 / num_timesteps
  np.testing.assert_allclose([betas[0], betas[-1]], [1e-4 * scale, 0.02 * scale], rtol=1e-14)
  np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) * scale / (num_timesteps - 1), rtol=1e-9)


@pytest.mark.parametrize("num_timesteps", [1000, 4000])
def test_cosine_follows_alpha_bar_and_is_capped(num_timesteps):
  betas = schedules.beta_schedule("cosine", num_timesteps)
  # Only the very last step hits the 0.999 cap (ᾱ(1) = cos²(π/2) ≈ 0).
  assert betas[-1] == 0.999 and np.all(betas[:-1] < 0.999) and np.all(betas > 0)
  # The product telescopes: ᾱ_t = ᾱ((t+1)/T) / ᾱ(0) wherever the cap is inactive.
  abar = np.cumprod(1.0 - betas)
  taus = np.arange(1, num_timesteps) / num_timesteps
  f = lambda tau: np.cos((tau + 0.008) / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(abar[:-1], f(taus) / f(0.0), rtol=1e-9)
  # The cap is what keeps ᾱ_T-1 positive.
  assert 0 < abar[-1] < 1e-6


def test_scaled_linear_endpoints():
  betas = schedules.beta_schedule("scaled_linear", 1000)
  np.testing.assert_allclose([betas[0], betas[-1]], [0.00085, 0.012], rtol=1e-14)
  roots = np.sqrt(betas)
  np.testing.assert_allclose(np.diff(roots), (np.sqrt(0.012) - np.sqrt(0.00085)) / 999, rtol=1e-9)


@pytest.mark.parametrize("num_timesteps", [1000, 50])
def test_sigmoid_schedule_is_monotone_in_unit_interval(num_timesteps):
  betas = schedules.beta_schedule("sigmoid", num_timesteps)
  assert np.all(betas > 0) and np.all(betas <= 1) and betas[-1] == 0.999
  assert np.all(np.diff(betas) > 0)
  abar = np.cumprod(1.0 - betas)
  assert np.all(np.diff(abar) < 0) and 0 < abar[-1] < abar[0] < 1


def test_rescale_zero_terminal_snr():
  betas = schedules.beta_schedule("scaled_linear", 1000)
  rescaled = schedules.rescale_zero_terminal_snr(betas)
  abar_old, abar_new = np.cumprod(1.0 - betas), np.cumprod(1.0 - rescaled)
  assert abar_new[-1] == 0.0 and rescaled[-1] == 1.0
  np.testing.assert_allclose(abar_new[0], abar_old[0], rtol=1e-14)
  # sqrt(ᾱ) is an affine map of the old sqrt(ᾱ) through (old[0] → old[0]) and (old[-1] → 0).
  r_old, r_new = np.sqrt(abar_old), np.sqrt(abar_new)
  want = (r_old - r_old[-1]) * r_old[0] / (r_old[0] - r_old[-1])
  np.testing.assert_allclose(r_new, want, rtol=1e-10, atol=1e-14)
  s = schedules.make_schedule(rescaled)
  assert float(s.alphas_cumprod[-1]) == 0.0 and float(s.alphas_cumprod[0]) == pytest.approx(abar_old[0])


# ----------------------------------------------------------------------------
# The Schedule pytree.


def _reference_fields(p):
  """The Schedule's fields, each from the reference Process (float64)."""
  with np.errstate(divide="ignore"):
    return dict(
        betas=p.betas,
        log_betas=np.log(p.betas),
        alphas_cumprod=p.abar,
        alphas_cumprod_prev=p.abar_prev,
        alphas_cumprod_next=p.abar_next,
        sqrt_alphas_cumprod=np.sqrt(p.abar),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - p.abar),
        log_one_minus_alphas_cumprod=np.log(1.0 - p.abar),
        sqrt_recip_alphas_cumprod=1.0 / np.sqrt(p.abar),
        sqrt_recipm1_alphas_cumprod=np.sqrt((1.0 - p.abar) / p.abar),
        posterior_variance=p.post_var,
        posterior_log_variance_clipped=p.post_logvar_clipped,
        posterior_mean_coef1=p.post_c1,
        posterior_mean_coef2=p.post_c2,
        fixed_large_variance=p.large_var,
        fixed_large_log_variance=np.log(p.large_var),
    )


@pytest.mark.parametrize("name,num_timesteps", [("linear", 1000), ("cosine", 1000), ("cosine", 37)])
def test_make_schedule_matches_reference_x64(x64, name, num_timesteps):
  s = schedules.make_schedule(schedules.beta_schedule(name, num_timesteps), dtype=jnp.float64)
  assert s.num_timesteps == num_timesteps
  want = _reference_fields(reference.Process(reference.beta_schedule(name, num_timesteps)))
  for field, value in want.items():
    got = np.asarray(getattr(s, field))
    assert got.dtype == np.float64, field
    np.testing.assert_allclose(got, value, rtol=1e-12, atol=0, err_msg=field)
  # Conventions that are easy to get wrong by one step.
  assert float(s.posterior_variance[0]) == 0.0
  assert float(s.posterior_log_variance_clipped[0]) == float(s.posterior_log_variance_clipped[1])
  assert float(s.posterior_mean_coef1[0]) == pytest.approx(1.0) and float(s.posterior_mean_coef2[0]) == 0.0
  assert float(s.fixed_large_variance[0]) == float(s.posterior_variance[1])
  assert float(s.fixed_large_variance[5]) == float(s.betas[5])


def test_make_schedule_stores_float64_results_rounded_to_float32():
  betas = schedules.beta_schedule("cosine", 1000)
  s = schedules.make_schedule(betas)
  want = _reference_fields(reference.Process(betas))
  for field, value in want.items():
    got = getattr(s, field)
    assert got.dtype == jnp.float32, field
    # Exactly the float64 value rounded once, not a float32 recomputation
    # (a float32 cumprod would be off by ~1e-5 relative at the last steps).
    np.testing.assert_array_equal(np.asarray(got), value.astype(np.float32), err_msg=field)


def test_schedule_is_a_pytree_with_static_length():
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 10))
  leaves, treedef = jax.tree_util.tree_flatten(s)
  array_fields = [f.name for f in dataclasses.fields(s) if f.name != "num_timesteps"]
  assert len(leaves) == len(array_fields) == 22 and all(leaf.shape == (10,) for leaf in leaves)
  doubled = jax.jit(lambda s: jax.tree_util.tree_map(lambda a: 2 * a, s))(s)
  assert doubled.num_timesteps == 10
  np.testing.assert_allclose(doubled.betas, 2 * np.asarray(s.betas))


def test_extract_broadcasts_over_image_dims():
  values = jnp.arange(10.0)
  out = schedules.extract(values, jnp.array([3, 0, 9]), jnp.zeros((3, 4, 5, 2)))
  assert out.shape == (3, 1, 1, 1)
  np.testing.assert_array_equal(out[:, 0, 0, 0], [3.0, 0.0, 9.0])


# ----------------------------------------------------------------------------
# Respacing.


@pytest.mark.parametrize("key", sorted(REFERENCE_SPACINGS))
def test_space_timesteps_matches_reference_code(key):
  num_timesteps, section_counts = key
  length, total, squares, steps = REFERENCE_SPACINGS[key]
  got = schedules.space_timesteps(num_timesteps, section_counts)
  assert list(got) == sorted(set(got.tolist()))
  assert (len(got), int(got.sum()), int((got**2).sum())) == (length, total, squares)
  if isinstance(steps, tuple):
    assert list(got[:5]) == steps[0] and list(got[-5:]) == steps[1]
  else:
    assert list(got) == steps
  assert list(got) == reference.space_timesteps(num_timesteps, section_counts)


def test_space_timesteps_accepts_a_sequence():
  np.testing.assert_array_equal(
      schedules.space_timesteps(300, [10, 15, 20]), schedules.space_timesteps(300, "10,15,20")
  )


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("num_timesteps,section_counts", [(1000, "ddim50"), (300, "10,15,20"), (4000, "10,10,10")])
def test_respace_keeps_alphas_cumprod_x64(x64, name, num_timesteps, section_counts):
  betas = schedules.beta_schedule(name, num_timesteps)
  kept = schedules.space_timesteps(num_timesteps, section_counts)
  s, timestep_map = schedules.respace(betas, kept, dtype=jnp.float64)
  assert s.num_timesteps == len(kept)
  assert timestep_map.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(timestep_map), kept)
  abar = np.cumprod(1.0 - betas)
  # ᾱ is rebuilt from the new betas (as in the reference), and 1 − β' rounds
  # away the low bits of a small ratio ᾱ_k/ᾱ_prev: a tiny final ᾱ is exact to
  # ~1e-16 absolute rather than relative.
  np.testing.assert_allclose(np.asarray(s.alphas_cumprod), abar[kept], rtol=1e-12, atol=1e-16)
  big = abar[kept] > 1e-3
  np.testing.assert_allclose(np.asarray(s.alphas_cumprod)[big], abar[kept][big], rtol=1e-13, atol=0)
  want_betas, want_map = reference.respace(reference.beta_schedule(name, num_timesteps), kept)
  np.testing.assert_allclose(np.asarray(s.betas), want_betas, rtol=1e-12, atol=0)
  np.testing.assert_array_equal(np.asarray(timestep_map), want_map)
  # Keeping every step gives back the original process.
  full, full_map = schedules.respace(betas, range(num_timesteps), dtype=jnp.float64)
  np.testing.assert_allclose(np.asarray(full.betas), betas, rtol=0, atol=1e-15)
  np.testing.assert_array_equal(np.asarray(full_map), np.arange(num_timesteps))


def test_respace_default_dtype_is_float32():
  s, timestep_map = schedules.respace(schedules.beta_schedule("cosine", 100), [0, 50, 99])
  assert s.betas.dtype == jnp.float32 and s.num_timesteps == 3
  np.testing.assert_array_equal(np.asarray(timestep_map), [0, 50, 99])


# ----------------------------------------------------------------------------
# Bad input.


def test_unknown_schedule_name_lists_choices():
  with pytest.raises(ValueError, match=r"schedule name='quadratic'.*'linear', 'cosine', 'scaled_linear', 'sigmoid'"):
    schedules.beta_schedule("quadratic", 1000)


def test_linear_schedule_too_short_for_its_scaling():
  # β_max = 0.02 · 1000/T reaches 1 below T = 21 (the reference would build it and then fail its assert).
  assert schedules.beta_schedule("linear", 21)[-1] < 1.0
  with pytest.raises(ValueError, match="use num_timesteps >= 21 or the 'cosine' schedule"):
    schedules.beta_schedule("linear", 20)


@pytest.mark.parametrize("num_timesteps", [0, -5, 10.0])
def test_bad_num_timesteps(num_timesteps):
  with pytest.raises(ValueError, match="num_timesteps must be a positive integer"):
    schedules.beta_schedule("linear", num_timesteps)


@pytest.mark.parametrize(
    "betas,match",
    [
        (np.array([0.1, 0.0, 0.2]), r"betas must lie in \(0, 1\]"),
        (np.array([0.1, -0.01]), r"betas must lie in \(0, 1\]"),
        (np.array([0.1, 1.5]), r"betas must lie in \(0, 1\]; got min 0.1, max 1.5"),
        (np.array([0.1, np.nan]), r"betas must lie in \(0, 1\]"),
        (np.full((2, 3), 0.1), "betas must be a 1-D array"),
        (np.array([0.1]), "at least 2 steps"),
    ],
)
def test_make_schedule_rejects_bad_betas(betas, match):
  with pytest.raises(ValueError, match=match):
    schedules.make_schedule(betas)


@pytest.mark.parametrize(
    "num_timesteps,section_counts,match",
    [
        (1000, "ddim1", "no integer stride gives exactly 1 of 1000 steps"),
        (4000, "ddim333", "no integer stride gives exactly 333"),
        (1000, "ddimfifty", "expected 'ddimN' with an integer N"),
        (1000, "10,x", "expected 'ddimN' or comma-separated integers"),
        (1000, "", "expected 'ddimN' or comma-separated integers"),
        (100, "60,60", "cannot take 60 steps from a section of 50 steps"),
        (100, "10,0", "every section needs at least 1 step"),
        (100, [], "every section needs at least 1 step"),
    ],
)
def test_space_timesteps_rejects_bad_section_counts(num_timesteps, section_counts, match):
  with pytest.raises(ValueError, match=match):
    schedules.space_timesteps(num_timesteps, section_counts)


@pytest.mark.parametrize("kept", [[5], [0, 100], [-1, 3], []])
def test_respace_rejects_bad_timesteps(kept):
  with pytest.raises(ValueError, match="use_timesteps must hold at least 2 distinct steps in 0..99"):
    schedules.respace(schedules.beta_schedule("linear", 100), kept)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_neighbour_roots_and_log_snr(name):
  """The t−1 / t+1 roots and λ are formed in float64: exact definitions, and in
  float32 far closer than anything computed from the float32 ᾱ where ᾱ ≈ 1."""
  betas = schedules.beta_schedule(name, 1000)
  abar = np.cumprod(1.0 - betas)
  prev, nxt = np.append(1.0, abar[:-1]), np.append(abar[1:], 0.0)
  want = dict(
      sqrt_alphas_cumprod_prev=np.sqrt(prev), sqrt_one_minus_alphas_cumprod_prev=np.sqrt(1 - prev),
      sqrt_alphas_cumprod_next=np.sqrt(nxt), sqrt_one_minus_alphas_cumprod_next=np.sqrt(1 - nxt),
      log_snr=0.5 * np.log(abar / (1 - abar)), log_snr_prev=0.5 * np.log(prev[1:] / (1 - prev[1:])),
  )
  s = schedules.make_schedule(betas)
  for field, value in want.items():
    got = np.asarray(getattr(s, field), np.float64)
    if field == "log_snr_prev":
      assert got[0] == np.inf
      got = got[1:]
    np.testing.assert_allclose(got, value, rtol=2e-7, atol=1e-30, err_msg=field)
  naive = np.sqrt(1.0 - np.asarray(s.alphas_cumprod_prev))  # float32 cancellation
  assert np.max(np.abs(naive[1:5] / want["sqrt_one_minus_alphas_cumprod_prev"][1:5] - 1)) > 1e-5
