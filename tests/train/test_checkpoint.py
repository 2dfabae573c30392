"""Orbax checkpoints: round trip with shardings, keep N, architecture mismatch, a crashed save."""

import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t2i_jax.train import checkpoint, sharding
from t2i_jax.train.state import create_train_state


def _state(width=4, seed=0):
  params = {"dense": {"kernel": jax.random.normal(jax.random.PRNGKey(seed), (8, width)), "bias": jnp.zeros(width)}}
  return create_train_state(params, optax.adam(1e-3), num_timesteps=10, loss_aware=True)


def _assert_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_shardings_and_extra(tmp_path):
  mesh = sharding.make_mesh(1)
  state = _state()
  state = state.replace(step=jnp.int32(7))
  manager = checkpoint.make_manager(str(tmp_path))
  assert checkpoint.save(manager, 7, state, {"data": {"index": 123}, "config": "x"})
  manager.wait_until_finished()
  fresh = _state(seed=1)
  shardings = sharding.state_sharding(fresh, mesh)
  restored, extra, step, _ = checkpoint.restore_or_init(checkpoint.make_manager(str(tmp_path)), fresh, shardings)
  assert step == 7 and extra == {"data": {"index": 123}, "config": "x"}
  _assert_equal(restored, state)
  assert restored.params["dense"]["kernel"].sharding == shardings.params["dense"]["kernel"]


def test_no_checkpoint_returns_the_initial_state(tmp_path):
  state = _state()
  out, extra, step, _ = checkpoint.restore_or_init(checkpoint.make_manager(str(tmp_path)), state,
                                                sharding.state_sharding(state, sharding.make_mesh(1)))
  assert out is state and extra is None and step == 0


def test_keeps_only_the_last_n_and_restores_any_kept_step(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    checkpoint.save(manager, step, _state(seed=step), {})
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 3]
  fresh = _state(seed=9)
  shardings = sharding.state_sharding(fresh, sharding.make_mesh(1))
  restored, _, step, _ = checkpoint.restore_or_init(manager, fresh, shardings, step=2)
  assert step == 2
  _assert_equal(restored, _state(seed=2))
  with pytest.raises(ValueError, match=r"no checkpoint at step 1 .*saved steps: \[2, 3\]"):
    checkpoint.restore_or_init(manager, fresh, shardings, step=1)


def test_different_architecture_is_refused_and_nothing_changes(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path))
  checkpoint.save(manager, 5, _state(width=4), {})
  manager.wait_until_finished()
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  other = _state(width=6)
  with pytest.raises(ValueError, match="different architecture.*shape"):
    checkpoint.restore_or_init(checkpoint.make_manager(str(tmp_path)), other,
                               sharding.state_sharding(other, sharding.make_mesh(1)))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_a_crashed_save_leaves_the_previous_checkpoint_usable(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path))
  good = _state()
  checkpoint.save(manager, 1, good, {"data": {"index": 1}})
  manager.wait_until_finished()
  # What a save killed midway leaves behind: a temporary step directory, never finalised.
  partial = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\x00" * 100)
  manager = checkpoint.make_manager(str(tmp_path))
  assert manager.latest_step() == 1
  restored, extra, step, _ = checkpoint.restore_or_init(manager, _state(seed=3),
                                                     sharding.state_sharding(good, sharding.make_mesh(1)))
  assert step == 1 and extra["data"]["index"] == 1
  _assert_equal(restored, good)
  assert not partial.exists()  # cleaned up by cleanup_tmp_directories


@flax.struct.dataclass
class _TrainStateBeforeModelState:
  """TrainState as it was before it had a model_state field."""

  step: Any
  params: Any
  ema_params: Any
  opt_state: Any
  loss_history: Any = None


def test_a_checkpoint_from_before_model_state_restores_and_a_stateful_target_is_refused(tmp_path):
  # Orbax matches a checkpoint against the target's tree by field names: a state without model_state keeps the
  # old tree exactly, so the checkpoints every family wrote before the field existed still restore.
  state = _state().replace(step=jnp.int32(4))
  old = _TrainStateBeforeModelState(state.step, state.params, state.ema_params, state.opt_state, state.loss_history)
  names = [[checkpoint._path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(t)[0]] for t in (state, old)]
  assert names[0] == names[1]
  manager = checkpoint.make_manager(str(tmp_path))
  checkpoint.save(manager, 4, old, {})
  manager.wait_until_finished()
  fresh = _state(seed=1)
  shardings = sharding.state_sharding(fresh, sharding.make_mesh(1))
  restored, _, step, _ = checkpoint.restore_or_init(checkpoint.make_manager(str(tmp_path)), fresh, shardings)
  assert step == 4 and restored.model_state is None
  _assert_equal(restored, state)
  # A model with non-param variables (an EMA codebook) is another architecture for that checkpoint.
  stateful = fresh.replace(model_state={"vq_stats": {"codebook": jnp.zeros((4, 2))}})
  with pytest.raises(ValueError, match=r"only in the config: \['model_state/vq_stats/codebook'\]"):
    checkpoint.restore_or_init(checkpoint.make_manager(str(tmp_path)), stateful,
                               sharding.state_sharding(stateful, sharding.make_mesh(1)))
