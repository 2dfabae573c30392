"""Meshes and shardings: the batch split over every device, params replicated or FSDP-sharded.

One jax.jit with NamedShardings on a Mesh with axes ("data", "fsdp") covers one
CPU, one GPU, a multi-GPU host and a multi-host TPU pod alike; batches are global
arrays assembled from each process's local slice.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")  # the batch is split over both axes: every device sees its own examples


def make_mesh(fsdp: int = 1) -> Mesh:
  """A (data, fsdp) mesh over all devices; fsdp = 1 replicates params on every device."""
  n = jax.device_count()
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"fsdp={fsdp} must divide the {n} devices; use a divisor of {n} (1 replicates params).")
  auto = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh((n // fsdp, fsdp), ("data", "fsdp"), axis_types=auto)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  if global_batch_size % mesh.size:
    raise ValueError(
        f"batch_size={global_batch_size} is not divisible by the {mesh.size} devices; use a multiple of "
        f"{mesh.size} (e.g. {mesh.size * max(1, round(global_batch_size / mesh.size))})."
    )


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
  """A global batch from this process's slice (numpy or jax arrays, any pytree).

  Every process passes its own [B_local, ...] arrays; the result is [B_global, ...]
  sharded along the batch axes (jax.make_array_from_process_local_data).
  """
  sharding = batch_sharding(mesh)

  def to_global(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(to_global, local_batch)


def _fsdp_spec(shape, fsdp: int) -> P:
  """Shard the largest dimension divisible by fsdp over "fsdp"; small or indivisible leaves replicate."""
  if fsdp == 1 or np.prod(shape, dtype=np.int64) < 2**14:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_sharding(state: Any, mesh: Mesh) -> Any:
  """NamedShardings for a train state (or params) pytree: replicated, or FSDP over the "fsdp" axis."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(np.shape(x), fsdp)), state)
