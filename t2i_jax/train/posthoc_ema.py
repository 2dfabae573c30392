"""EDM2's post-hoc EMA (Karras et al. 2024, §3): train with a few power-function EMA profiles, snapshot them at
intervals, and after training reconstruct the EMA of any length from the snapshots by least squares.

A power-function EMA of exponent γ weights the params of step τ ∈ [0, t] by ∝ τ^γ: at step t (1-based) it updates
θ̂ ← β·θ̂ + (1 − β)·θ with β = (1 − 1/t)^(γ+1). Its length is σ_rel = √((γ+1)/((γ+2)²(γ+3))), the width of the
averaging profile as a fraction of training so far, which stays put as training goes on (a constant-decay EMA's
shrinks). EDM2 tracks σ_rel = 0.05 and 0.10 and snapshots both every few million images.

The profiles of the snapshots (t_i, γ_i) span a space of averaging profiles; the target (t, γ) is projected onto it
in L2 over τ, and the same coefficients combine the snapshots' params. The inner product of two profiles
p(τ) = (γ+1)·τ^γ / t^(γ+1) on [0, t] is closed form (`profile_inner`).

Snapshots live in WORKDIR/posthoc_ema/STEP.msgpack ({"step", "sigma_rels", "profiles": [params per σ_rel]});
`write_workdir` turns a reconstruction into a workdir that --mode=sample and --mode=eval read like any run.
"""

import json
import os
import shutil
from typing import Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.train import checkpoint

SNAPSHOT_DIR = "posthoc_ema"
# σ_rel of γ = 0 (a uniform average of all training so far): longer profiles have no power-function EMA.
MAX_SIGMA_REL = float(np.sqrt(1.0 / 12.0))


def check_sigma_rel(sigma_rel) -> float:
  if not 0 < sigma_rel < MAX_SIGMA_REL:
    raise ValueError(f"sigma_rel={sigma_rel!r}: a power-function EMA's length lies in (0, {MAX_SIGMA_REL:.3f}) "
                     "(EDM2 tracks 0.05 and 0.10).")
  return float(sigma_rel)


def gamma_of(sigma_rel: float) -> float:
  """The exponent γ > 0 of an EMA of length σ_rel: the largest root of
  γ³ + 7γ² + (16 − σ_rel⁻²)·γ + (12 − σ_rel⁻²) = 0."""
  inv = 1.0 / check_sigma_rel(sigma_rel) ** 2
  roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
  return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def sigma_rel_of(gamma: float) -> float:
  return float(np.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0))))


def update(profiles: Sequence, params, step: jax.Array, gammas: Sequence[float]) -> tuple:
  """One step of each power-function EMA: profiles (one params tree per γ) after the update that made
  params; step: the state's step before that update (int32 []), so the update is the (step + 1)-th."""
  t = jnp.asarray(step, jnp.float32) + 1.0
  out = []
  for profile, gamma in zip(profiles, gammas):
    beta = (1.0 - 1.0 / t) ** (gamma + 1.0)  # 0 on the first step: the profile starts at the params
    out.append(jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, profile, params))
  return tuple(out)


def profile_inner(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
  """∫ p_a·p_b dτ for p(τ) = (γ+1)·τ^γ / t^(γ+1) on [0, t]."""
  if t_a > t_b:
    t_a, gamma_a, t_b, gamma_b = t_b, gamma_b, t_a, gamma_a
  # = (γa+1)(γb+1)/(γa+γb+1) · t_a^γb / t_b^(γb+1), written with the ratio t_a/t_b ≤ 1 to stay finite.
  return (gamma_a + 1) * (gamma_b + 1) / (gamma_a + gamma_b + 1) * (t_a / t_b) ** gamma_b / t_b


def solve_coefficients(steps: Sequence[int], gammas: Sequence[float], target_step: int,
                       target_gamma: float) -> np.ndarray:
  """The least-squares weights [len(steps)] of the snapshot profiles (steps[i], gammas[i]) whose sum is nearest
  the target profile (target_step, target_gamma)."""
  a = np.array([[profile_inner(ti, gi, tj, gj) for tj, gj in zip(steps, gammas)] for ti, gi in zip(steps, gammas)])
  b = np.array([profile_inner(ti, gi, target_step, target_gamma) for ti, gi in zip(steps, gammas)])
  # Normalised rows keep lstsq's cutoff meaningful across snapshots far apart in t.
  scale = 1.0 / np.sqrt(np.diag(a))
  x = np.linalg.lstsq(a * scale[:, None] * scale[None, :], b * scale, rcond=1e-12)[0]
  return x * scale


def _host(tree):
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def write_snapshot(workdir: str, step: int, sigma_rels: Sequence[float], profiles: Sequence) -> str:
  """Saves the profiles at `step` (on process 0; every process must call it, for the gather); a resumed run
  that passes the step again writes the same file again. Returns its path."""
  profiles = _host(list(profiles))
  path = os.path.join(workdir, SNAPSHOT_DIR, f"{step:08d}.msgpack")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {"step": int(step), "sigma_rels": [float(s) for s in sigma_rels],
            "profiles": {str(i): flax.serialization.to_state_dict(p) for i, p in enumerate(profiles)}}
    with open(path + ".tmp", "wb") as f:
      f.write(flax.serialization.msgpack_serialize(data))
    os.replace(path + ".tmp", path)  # a kill mid-write leaves the old file or none, never half of one
  return path


def read_snapshots(workdir: str, up_to: Optional[int] = None) -> list:
  """[(step, sigma_rel, params)] of every snapshot profile in workdir at steps ≤ up_to, oldest first."""
  folder = os.path.join(workdir, SNAPSHOT_DIR)
  names = sorted(n for n in os.listdir(folder) if n.endswith(".msgpack")) if os.path.isdir(folder) else []
  out = []
  for name in names:
    with open(os.path.join(folder, name), "rb") as f:
      data = flax.serialization.msgpack_restore(f.read())
    if up_to is not None and data["step"] > up_to:
      continue
    for i, sigma_rel in enumerate(data["sigma_rels"]):
      out.append((int(data["step"]), float(sigma_rel), data["profiles"][str(i)]))
  if not out:
    raise ValueError(f"{workdir} has no post-hoc EMA snapshots{'' if up_to is None else f' up to step {up_to}'}; "
                     "train with train.posthoc_ema set (configs/shapes_edm.py).")
  return out


def reconstruct(workdir: str, sigma_rel: float, step: Optional[int] = None):
  """(params, coefficients [num snapshot profiles], step): the EMA of length sigma_rel at `step` (default: the
  last snapshot's), combined from the snapshots at or before it."""
  gamma = gamma_of(sigma_rel)
  snaps = read_snapshots(workdir, step)
  step = max(s for s, _, _ in snaps) if step is None else step
  coefficients = solve_coefficients([s for s, _, _ in snaps], [gamma_of(r) for _, r, _ in snaps], step, gamma)
  params = jax.tree.map(lambda *leaves: sum(float(c) * np.asarray(x, np.float64) for c, x in zip(coefficients, leaves)),
                        *[p for _, _, p in snaps])
  return jax.tree.map(lambda x: x.astype(np.float32), params), coefficients, step


def write_workdir(workdir: str, sigma_rel: float, step: Optional[int] = None) -> str:
  """Writes WORKDIR/posthoc_ema/sigma_rel_X: the run's config.json and a checkpoint whose params (EMA and raw)
  are the reconstruction of length sigma_rel, which --mode=sample and --mode=eval read. Returns its path."""
  params, coefficients, step = reconstruct(workdir, sigma_rel, step)
  out = os.path.join(workdir, SNAPSHOT_DIR, f"sigma_rel_{sigma_rel:.3f}")
  if os.path.isdir(out):
    shutil.rmtree(out)  # a reconstruction is derived data; the snapshots it came from stay
  os.makedirs(out)
  shutil.copy(os.path.join(workdir, "config.json"), os.path.join(out, "config.json"))
  record = dict(source=os.path.abspath(workdir), sigma_rel=sigma_rel, step=step,
                coefficients=[float(c) for c in coefficients])
  with open(os.path.join(out, "posthoc_ema.json"), "w") as f:
    json.dump(record, f, indent=1)
  checkpoint.write_params(out, step, params, {"posthoc_ema": record})
  return out
