"""Orbax checkpoints under <workdir>/checkpoints: async saves, keep N, resume by itself.

Each checkpoint holds two items: "state" (the TrainState pytree, restored against
an abstract target that carries the shardings of the current mesh) and "extra"
(JSON: the data iterator's state and the model config). A workdir whose
checkpoint was written for another architecture is refused with a ValueError
before anything in it is touched.
"""

import json
import logging
import os
import time
from typing import Any, List, Optional, Sequence, Tuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from t2i_jax import config_keys, models
from t2i_jax.train import sharding, state as state_lib


# Orbax splits the saving of a replicated array across its replicas; for arrays under 1 MiB the
# per-replica slicing costs more than it saves (on 8 CPU devices it was 3.7 of a 4 s save).
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 2**20


_handler_registered = False


def _register_array_handler() -> None:
  """Once per process; replacing Orbax's default jax.Array handler is intended, so its warning is muted."""
  global _handler_registered
  if _handler_registered:
    return
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL), override=True)
  finally:
    absl_logger.setLevel(level)
  _handler_registered = True


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager for <workdir>/checkpoints; half-written saves left by a crash are removed.

  read_only: for sampling or a frozen model: creates nothing and removes nothing (a run may be saving there),
    and reads any part of the state on its own (`load_variables`: the params, never the optimizer).
  """
  _register_array_handler()
  if read_only:
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, cleanup_tmp_directories=False,
                                           max_to_keep=None, save_interval_steps=0)
  else:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True, create=True)
  # Handlers named up front, so a new process can read a checkpoint's metadata before restoring it.
  # A reader restores part of the state (partial_restore), which the PyTree handler does; the format is the same.
  state_handler = ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler()
  handlers = {"state": state_handler, "extra": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options,
                               item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, extra: dict, force: bool = False) -> bool:
  """Starts an (async) save of state and the JSON-able `extra` at `step`; True if a save started."""
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     extra=ocp.args.JsonSave(extra)), force=force)


def write_params(workdir: str, step: int, params: Any, extra: dict) -> None:
  """A checkpoint of params alone (as both params and ema_params) at `step` in workdir, written before this
  returns: what sampling, eval, a cascade or a fine-tune read of a run (`load_variables`), for params that were
  not trained here (a post-hoc EMA reconstruction, converted released weights). extra: JSON-able provenance."""
  manager = make_manager(workdir, max_to_keep=1, async_save=False)
  try:
    save(manager, step, {"params": params, "ema_params": params}, extra, force=True)
    manager.wait_until_finished()
  finally:
    manager.close()


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _path_name(path) -> str:
  """'params/dense/kernel' for a key path, whether it runs through dicts or dataclass fields."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _check_same_architecture(manager, step: int, target: Any, partial: bool = False) -> None:
  """Compares the saved state's tree and shapes with `target` (with `partial`, a dict of some of the state's
  fields, compared with those alone); raises a ValueError naming the first difference."""
  saved = manager.item_metadata(step)["state"]
  if partial:
    saved = {key: saved[key] for key in target if key in saved}
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
    raise ArchitectureError(
        f"{manager.directory} holds a checkpoint (step {step}) of a different architecture: {problem}. "
        "Nothing was changed; use a new --workdir, or the config that wrote it."
    )


def has_checkpoint(workdir: str) -> bool:
  """Whether <workdir>/checkpoints holds a saved step (a folder named by its number; Orbax's half-written
  "<step>.orbax-checkpoint-tmp" folders do not count). Reads the directory only."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def write_config(workdir: str, config) -> None:
  """Keeps the config beside the checkpoints; a resumed run with another model config is refused."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(sort_keys=True, indent=2)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old.get("model") != json.loads(text)["model"]:
      raise ValueError(f"{workdir} was written by a run with another model config (see {path}); "
                       "use a new --workdir or the same config. Nothing was changed.")
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json a training run wrote into its workdir (the run's own settings), defaults filled in
  for keys added since it was written."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir} has no config.json: it is not a t2i_jax training workdir. Train the model "
                     "there first (python -m t2i_jax.main --config=... --workdir=...).")
  with open(path) as f:
    return config_keys.complete(ml_collections.ConfigDict(json.load(f)))


def load_variables(config, workdir: str, step: Optional[int] = None, use_ema: bool = True):
  """(model, params, model_state, step) of a training workdir's newest checkpoint that restores (or of `step`),
  for sampling or as a frozen model: the EMA params (or the raw ones) and the model's non-param variables
  (an EMA codebook; None for most models).

  Only those are read, against shapes from jax.eval_shape of the model's init: no optimizer or train state
  is built, so a config whose optim or train section differs from the run's reads it. ValueError if the
  workdir has no checkpoint, none restores, or its params are of another architecture.
  """
  model = models.build(config.model)
  args, kwargs = models.example_inputs(model, 1)
  params, model_state = state_lib.split_variables(
      jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs)))
  target = {"ema_params" if use_ema else "params": params}
  if model_state is not None:
    target["model_state"] = model_state
  if not has_checkpoint(workdir):
    raise ValueError(f"{workdir} has no checkpoint to read; train first (--mode=train).")
  manager = make_manager(workdir, read_only=True)
  try:
    restored, _, step, _ = restore_or_init(manager, target, sharding.state_sharding(target, sharding.make_mesh()),
                                           step, partial=True)
  finally:
    manager.close()
  return model, restored[next(iter(target))], restored.get("model_state"), step


def load_params(config, workdir: str, use_ema: bool = True, step: Optional[int] = None):
  """(model, params, step) of `load_variables`. A model with non-param variables (an EMA codebook) needs
  those too: use load_variables, or a pipelines Stage."""
  model, params, _, step = load_variables(config, workdir, step, use_ema)
  return model, params, step


def read_extra(workdir: str, step: int) -> dict:
  """The JSON saved beside the state of checkpoint `step` in workdir (the data iterator's state, and what the
  task stores there, e.g. an autoencoder's latent scale)."""
  manager = make_manager(workdir, read_only=True)
  try:
    if step not in manager.all_steps():
      raise ValueError(f"no checkpoint at step {step} in {manager.directory}; saved steps: "
                       f"{sorted(manager.all_steps())}.")
    return manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]
  finally:
    manager.close()


class ArchitectureError(ValueError):
  """A checkpoint written for another architecture than the config's."""


def _restore(manager, step: int, init_state: Any, shardings: Any, partial: bool = False):
  _check_same_architecture(manager, step, init_state, partial)
  abstract = _abstract(init_state, shardings)
  if partial:
    state = ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                   partial_restore=True)
  else:
    state = ocp.args.StandardRestore(abstract)
  restored = manager.restore(step, args=ocp.args.Composite(state=state, extra=ocp.args.JsonRestore()))
  return restored["state"], restored["extra"]


def _reason(error: Exception) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:200]}"


def restore_or_init(manager: ocp.CheckpointManager, init_state: Any, shardings: Any, step: Optional[int] = None,
                    partial: bool = False) -> Tuple[Any, Optional[dict], int, List[int]]:
  """Resumes from the newest checkpoint that restores (or from `step`, which must exist and restore).

  A checkpoint that cannot be read (files truncated or missing on disk) is
  skipped with a warning that names its step and the error, and the next older
  one is tried; one of another architecture stops everything (ArchitectureError).

  Args:
    init_state: a freshly initialised state (its structure and dtypes are the
      restore target; it is returned unchanged when there is no checkpoint).
    shardings: NamedShardings for the state, as the current mesh wants them.
    step: restore this saved step instead of the newest; ValueError if it was not saved or does not restore.
    partial: init_state is a dict of some of the state's fields (a read_only manager's), restored alone.

  Returns:
    (state, extra or None, step, skipped steps): the restored or the initial state.

  Raises:
    ValueError: checkpoints exist but none restores (each step and its error named).
  """
  saved = sorted(manager.all_steps(), reverse=True)
  if step is not None and step not in saved:
    raise ValueError(f"no checkpoint at step {step} in {manager.directory}; saved steps: {sorted(saved)}.")
  if not saved:
    return init_state, None, 0, []
  failures = []
  for candidate in ([step] if step is not None else saved):
    try:
      state, extra = _restore(manager, candidate, init_state, shardings, partial)
    except ArchitectureError:
      raise
    except Exception as error:  # pylint: disable=broad-except  (any damage to the files on disk)
      failures.append((candidate, _reason(error)))
      print(f"warning: checkpoint step {candidate} in {manager.directory} cannot be restored ({failures[-1][1]}); "
            "skipping it", flush=True)
      continue
    if failures:
      print(f"warning: restored step {candidate} instead of step {failures[0][0]}", flush=True)
    return state, extra, candidate, [s for s, _ in failures]
  raise ValueError(f"no checkpoint in {manager.directory} can be restored: "
                   + "; ".join(f"step {s} ({why})" for s, why in failures)
                   + ". Delete the damaged step folders to start afresh, or restore them from a copy.")


def set_aside(manager: ocp.CheckpointManager, steps: Sequence[int], workdir: str) -> None:
  """Moves damaged checkpoint steps to <workdir>/damaged_checkpoints/<step>, kept for inspection, so that the
  resumed run can save those steps again."""
  if not steps:
    return
  target = os.path.join(workdir, "damaged_checkpoints")
  os.makedirs(target, exist_ok=True)
  for step in steps:
    os.replace(os.path.join(str(manager.directory), str(step)), os.path.join(target, f"{step}_{int(time.time())}"))
    print(f"warning: moved the damaged checkpoint step {step} to {target}", flush=True)
  manager.reload()
