"""Orbax checkpoints under <workdir>/checkpoints: async saves, keep N, resume by itself.

Each checkpoint holds two items: "state" (the TrainState pytree, restored against
an abstract target that carries the shardings of the current mesh) and "extra"
(JSON: the data iterator's state and the model config). A workdir whose
checkpoint was written for another architecture is refused with a ValueError
before anything in it is touched.
"""

import json
import os
from typing import Any, Optional, Tuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from t2i_jax import models
from t2i_jax.train import sharding, state as state_lib


# Orbax splits the saving of a replicated array across its replicas; for arrays under 1 MiB the
# per-replica slicing costs more than it saves (on 8 CPU devices it was 3.7 of a 4 s save).
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 2**20


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager for <workdir>/checkpoints; half-written saves left by a crash are removed."""
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL), override=True)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
  # Handlers named up front, so a new process can read a checkpoint's metadata before restoring it.
  handlers = {"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options,
                               item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, extra: dict, force: bool = False) -> bool:
  """Starts an (async) save of state and the JSON-able `extra` at `step`; True if a save started."""
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     extra=ocp.args.JsonSave(extra)), force=force)


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _path_name(path) -> str:
  """'params/dense/kernel' for a key path, whether it runs through dicts or dataclass fields."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _check_same_architecture(manager, step: int, target: Any) -> None:
  """Compares the saved state's tree and shapes with `target`; raises a ValueError naming the first difference."""
  saved = manager.item_metadata(step)["state"]
  saved_leaves = jax.tree_util.tree_flatten_with_path(saved)[0]
  target_leaves = jax.tree_util.tree_flatten_with_path(target)[0]
  saved_map = {_path_name(p): tuple(getattr(v, "shape", ())) for p, v in saved_leaves}
  target_map = {_path_name(p): tuple(getattr(v, "shape", ())) for p, v in target_leaves}
  problem = None
  missing, extra = sorted(set(target_map) - set(saved_map)), sorted(set(saved_map) - set(target_map))
  if missing or extra:
    problem = f"parameters only in the config: {missing[:3]}; only in the checkpoint: {extra[:3]}"
  else:
    for key, shape in target_map.items():
      if saved_map[key] != shape:
        problem = f"{key} has shape {saved_map[key]} in the checkpoint but {shape} in the config"
        break
  if problem:
    raise ValueError(
        f"{manager.directory} holds a checkpoint (step {step}) of a different architecture: {problem}. "
        "Nothing was changed; use a new --workdir, or the config that wrote it."
    )


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json a training run wrote into its workdir (the run's own settings)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir} has no config.json: it is not a t2i_jax training workdir. Train the model "
                     "there first (python -m t2i_jax.main --config=... --workdir=...).")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_params(config, workdir: str, use_ema: bool = True, step: Optional[int] = None):
  """(model, params, step) of a training workdir's latest checkpoint (or of `step`), for sampling or as a
  frozen model.

  Only shapes are built (jax.eval_shape of the config's init), so nothing is
  initialised before the restore. ValueError if the workdir has no checkpoint.
  """
  model = models.build(config.model)
  abstract = jax.eval_shape(state_lib.make_init_fn(model, config, state_lib.make_optimizer(config.optim)))
  manager = make_manager(workdir, config.train.max_to_keep)
  if manager.latest_step() is None:
    raise ValueError(f"{workdir} has no checkpoint to sample from; train first (--mode=train).")
  state, _, step = restore_or_init(manager, abstract, sharding.state_sharding(abstract, sharding.make_mesh()), step)
  return model, (state.ema_params if use_ema else state.params), step


def restore_or_init(manager: ocp.CheckpointManager, init_state: Any, shardings: Any, step: Optional[int] = None,
                    ) -> Tuple[Any, Optional[dict], int]:
  """Resumes from the latest checkpoint if there is one (or from `step`, which must exist).

  Args:
    init_state: a freshly initialised state (its structure and dtypes are the
      restore target; it is returned unchanged when there is no checkpoint).
    shardings: NamedShardings for the state, as the current mesh wants them.
    step: restore this saved step instead of the latest; ValueError if it was not saved.

  Returns:
    (state, extra or None, step): the restored or the initial state.
  """
  if step is not None and step not in manager.all_steps():
    raise ValueError(f"no checkpoint at step {step} in {manager.directory}; saved steps: {manager.all_steps()}.")
  step = manager.latest_step() if step is None else step
  if step is None:
    return init_state, None, 0
  _check_same_architecture(manager, step, init_state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(init_state, shardings)), extra=ocp.args.JsonRestore()))
  return restored["state"], restored["extra"], step
