"""Train state, optimizer and EMA: everything a run checkpoints, as one pytree.

TrainState holds the step, params, their EMA, the optimizer state, the
loss-aware timestep sampler's history (or None) and the model's variables other
than params (or None): a VQModel(ema=True)'s EMA codebook, which the loss updates
rather than the optimizer. It is a pytree, so jit, sharding and Orbax treat it
like any other; nothing lives outside it.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from t2i_jax import models
from t2i_jax.diffusion import timestep_sampling


@dataclasses.dataclass(frozen=True)
class TrainState:
  """A frozen dataclass registered as a pytree (below) whose nodes are its fields, like a flax.struct dataclass,
  except that model_state and posthoc_ema are nodes only when they are not None: Orbax matches a checkpoint
  against the target's tree by field names, so a None field that was a node would make every checkpoint saved
  before the field existed unreadable; without them a run keeps exactly its old state tree."""

  step: jax.Array  # int32 scalar
  params: Any
  ema_params: Any
  opt_state: Any
  loss_history: Optional[timestep_sampling.LossHistoryState] = None
  # {collection: tree} of the model's non-param variables (e.g. {"vq_stats": ...}), or None when it has none.
  # Not averaged into an EMA copy: sampling with ema_params reads these as they are.
  model_state: Any = None
  # EDM2's power-function EMA profiles (train/posthoc_ema.py), one params tree per train.posthoc_ema σ_rel,
  # or None when the run keeps none.
  posthoc_ema: Any = None

  def replace(self, **changes) -> "TrainState":
    """A copy with the given fields changed."""
    return dataclasses.replace(self, **changes)


_FIELDS = ("step", "params", "ema_params", "opt_state", "loss_history")
_OPTIONAL = ("model_state", "posthoc_ema")


def _node_names(state: TrainState) -> tuple:
  return _FIELDS + tuple(n for n in _OPTIONAL if getattr(state, n) is not None)


jax.tree_util.register_pytree_with_keys(
    TrainState,
    lambda s: ([(jax.tree_util.GetAttrKey(n), getattr(s, n)) for n in _node_names(s)], _node_names(s)),
    lambda names, children: TrainState(**dict(zip(names, children))),
    flatten_func=lambda s: ([getattr(s, n) for n in _node_names(s)], _node_names(s)))


def make_lr_schedule(config) -> optax.Schedule:
  """The learning rate against the step: linear warmup from 0 over warmup_steps, then

  "constant": lr from then on;
  "cosine": cosine decay to 0 at total_steps;
  "wsd" (warmup-stable-decay): lr until total_steps − cooldown_steps, then linear decay to 0 at
  total_steps. Unlike cosine, the rate stays at its peak for most of a short run; the cooldown
  anneals the raw params at the end much as an average of them would.

  config: lr, warmup_steps, schedule, total_steps (cosine, wsd), cooldown_steps (wsd).
  """
  warmup = max(config.warmup_steps, 1)
  if config.schedule == "constant":
    return optax.warmup_constant_schedule(0.0, config.lr, warmup)
  if config.schedule not in ("cosine", "wsd"):
    raise ValueError(f"optim.schedule={config.schedule!r}; use 'constant', 'cosine' or 'wsd'.")
  total = config.total_steps
  if total <= warmup:
    raise ValueError(f"optim.total_steps={total} must exceed the warmup ({warmup}) for schedule "
                     f"{config.schedule!r}; set it to the run's train.num_steps.")
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, total)
  cooldown = config.cooldown_steps
  if not 0 < cooldown <= total - warmup:
    raise ValueError(f"optim.cooldown_steps={cooldown} must lie in (0, total_steps − warmup] = (0, {total - warmup}] "
                     "for schedule 'wsd'.")
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.lr, warmup),
       optax.constant_schedule(config.lr),
       optax.linear_schedule(config.lr, 0.0, cooldown)],
      boundaries=[warmup, total - cooldown])


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW under `make_lr_schedule(config)`, after global-norm clipping.

  config: the schedule's keys, weight_decay, b1, b2, grad_clip (<= 0 disables clipping).
  """
  chain = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
  chain.append(optax.adamw(make_lr_schedule(config), b1=config.b1, b2=config.b2, weight_decay=config.weight_decay))
  return optax.chain(*chain)


def ema_decay(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
  """The EMA decay at `step`; with warmup, min(decay, (1 + step)/(10 + step)) as in
  many diffusion codebases, so early averages are not dominated by the random init."""
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay: jax.Array):
  """ema ← decay·ema + (1 − decay)·params, leafwise."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


# Variables a module writes only when asked (Module.sow); never part of the state.
TRANSIENT_COLLECTIONS = ("intermediates",)


def split_variables(variables):
  """(params, model_state) of `model.init`'s variables: model_state is the other collections as a dict, or None
  when there are none (every family but a VQModel with an EMA codebook)."""
  rest = {k: v for k, v in variables.items() if k != "params" and k not in TRANSIENT_COLLECTIONS}
  return variables["params"], (rest or None)


def variables(params, model_state) -> dict:
  """{"params": params, **model_state}: what model.apply takes; model_state None for a params-only model."""
  return {"params": params, **(model_state or {})}


def make_init_fn(model, config, optimizer: optax.GradientTransformation):
  """() -> a fresh TrainState for a config of any model family: jit it with out_shardings to
  initialise directly on the mesh, or jax.eval_shape it for the shapes alone (restoring, sampling).

  The loss-aware timestep sampler's history is included when
  config.diffusion.timestep_sampler asks for it; the model's non-param variables (model_state)
  when model.init makes any.
  """
  args, kwargs = models.example_inputs(model, 1)
  diffusion = config.get("diffusion")  # CLIP has none
  posthoc = len(config.train.posthoc_ema)
  loss_aware = diffusion is not None and diffusion.timestep_sampler == "loss-second-moment"
  num_timesteps = None if diffusion is None else diffusion.num_timesteps

  def init_fn(params=None):
    """params: given initial params (a fine-tuned run's), else drawn from config.seed."""
    # The "rbg" generator: XLA compiles a model's init 2-3x faster with it than with threefry
    # (7.6 s -> 3.0 s for the runlocal U-Net on CPU); only the init draws from it.
    init = lambda: model.init(jax.random.key(config.seed, impl="rbg"), *args, **kwargs)  # noqa: E731
    if params is None:
      params, model_state = split_variables(init())
    else:
      # Given params: the other collections (if the model has any; shapes alone tell) still start fresh.
      model_state = split_variables(jax.eval_shape(init))[1]
      if model_state is not None:
        model_state = split_variables(init())[1]
    return create_train_state(params, optimizer, num_timesteps, loss_aware=loss_aware, model_state=model_state,
                              posthoc_profiles=posthoc)

  return init_fn


def create_train_state(params, optimizer: optax.GradientTransformation, num_timesteps: Optional[int] = None,
                       loss_aware: bool = False, model_state: Any = None, posthoc_profiles: int = 0) -> TrainState:
  """A fresh TrainState at step 0; EMA params (and posthoc_profiles power-function EMA copies, if any) start
  as a copy of params; model_state: the model's non-param variables ({collection: tree}) or None."""
  history = timestep_sampling.init_loss_history(num_timesteps) if loss_aware else None
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree.map(jnp.copy, params),
      opt_state=optimizer.init(params),
      loss_history=history,
      model_state=model_state,
      posthoc_ema=tuple(jax.tree.map(jnp.copy, params) for _ in range(posthoc_profiles)) or None,
  )
