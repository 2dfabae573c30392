"""The training loop for a config of any model family: build, resume, step, log, checkpoint, stop cleanly.

Everything lives under --workdir: checkpoints/, metrics.jsonl and config.json. A
run resumes by itself from the latest checkpoint (state and data iterator), and
SIGTERM / SIGINT make it save and exit at the next step boundary. A step whose
loss or gradients are not finite stops the run with an error naming it and the
last good checkpoint; its state is never saved.
"""

import functools
import json
import os
import signal
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax import config_keys
from t2i_jax.data import input_pipeline, tokenizer as tokenizer_lib
from t2i_jax.train import (checkpoint, families, finetune, frozen_autoencoder, posthoc_ema, sharding,
                           state as state_lib, step as step_lib)


def _check_steps(train_config) -> None:
  """Refuses a step count, interval or batch that cannot train (before the workdir is touched)."""
  for key in ("num_steps", "batch_size", "log_every", "checkpoint_every", "grad_accum_steps"):
    value = train_config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"train.{key}={value!r} must be a positive integer; nothing was written.")
  if train_config.sample_every < 0:
    raise ValueError(f"train.sample_every={train_config.sample_every!r} must be 0 (off) or a positive number of "
                     "steps; nothing was written.")
  for sigma_rel in train_config.posthoc_ema:
    posthoc_ema.check_sigma_rel(sigma_rel)
  if train_config.posthoc_ema and train_config.posthoc_every < 1:
    raise ValueError(f"train.posthoc_every={train_config.posthoc_every!r}: the post-hoc EMA profiles are snapshot "
                     "every that many steps; set a positive number (EDM2: every ~2% of training).")


class _StopFlag:
  """Set by SIGTERM / SIGINT; the loop saves and returns at the next step boundary."""

  def __init__(self):
    self.stop = False
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    print(f"\nreceived signal {signum}: saving a checkpoint and stopping", flush=True)
    self.stop = True

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def _check_finite(step: int, metrics: dict, manager, workdir: str) -> None:
  """Raises FloatingPointError if the step's loss or gradients were not finite (its state is never saved)."""
  if bool(_local(metrics["finite"])):
    return
  manager.wait_until_finished()  # the saves before this step are the run's good state: let them land
  last = manager.latest_step()
  kept = (f"the last good checkpoint is step {last} in {os.path.join(workdir, 'checkpoints')}, and the run "
          "resumes from it" if last is not None else "no checkpoint was saved")
  loss, grad_norm = float(_local(metrics["loss"])), float(_local(metrics["grad_norm"]))
  raise FloatingPointError(
      f"step {step}: the loss ({loss:.4g}) or the gradients (norm {grad_norm:.4g}) are not finite; training "
      f"stopped without saving that state; {kept}. Lower optim.lr, set optim.grad_clip, or check the data.")


def make_iterator(config, tokenizer=None):
  """This process's iterator over the training split: its share of config.train.batch_size per batch,
  shuffled by config.seed (a checkpoint stores its state)."""
  source = input_pipeline.make_source(config.data, "train")
  return input_pipeline.create_iterator(
      source, batch_size=config.train.batch_size // jax.process_count(), seed=config.seed, tokenizer=tokenizer,
      context_length=config.data.context_length, process_index=jax.process_index(),
      process_count=jax.process_count(), image_size=config.data.image_size,
      random_crop=config.data.random_crop, random_flip=config.data.random_flip)


def train(config, workdir: str, sample_fn: Optional[Callable[[Any, int], str]] = None) -> Any:
  """Trains config.train.num_steps steps (resuming if the workdir has a checkpoint); returns the final state.

  Any model family of train.families; config sections: model, data, optim,
  train and the family's own (diffusion, sample, prior, ...) — see t2i_jax/config_keys.py and configs/.

  Args:
    sample_fn: (params, step) -> path, called every config.train.sample_every
      steps on process 0 with this process's copy of the params that
      config.sample.use_ema names (main.py passes pipelines' periodic sampler).

  Raises:
    ValueError: a bad config, batch size or workdir, before the workdir is touched.
    FloatingPointError: a step whose loss or gradients are not finite; nothing
      of it is saved, and the message names the last good checkpoint.
  """
  config = config_keys.complete(config)
  mesh = sharding.make_mesh(config.fsdp)
  _check_steps(config.train)
  sharding.check_batch_size(config.train.batch_size, mesh)
  task = families.make_task(config, workdir)
  model = task.model
  tokenizer = families.tokenizer_for(config)
  if tokenizer is not None:
    families.of(config).check_text(config, tokenizer)

  iterator = make_iterator(config, tokenizer)

  # A fine-tuned run starts from its base's params, unless it resumes from its own checkpoints.
  fresh_finetune = config.get("finetune") is not None and not checkpoint.has_checkpoint(workdir)
  if fresh_finetune:
    finetune.check_base(config)

  # Everything above validates the config and the data; only now is the workdir touched.
  os.makedirs(workdir, exist_ok=True)
  checkpoint.write_config(workdir, config)  # refuses another model's workdir before anything is compiled
  if task.frozen is not None:
    frozen_autoencoder.write_record(workdir, task.frozen)
  optimizer = state_lib.make_optimizer(config.optim)
  init_state = state_lib.make_init_fn(model, config, optimizer)
  # Shapes first, then one compiled init that writes every array straight to its shards.
  abstract = jax.eval_shape(init_state)
  n_params = sum(leaf.size for leaf in jax.tree.leaves(abstract.params))
  shardings = sharding.state_sharding(abstract, mesh)
  manager = checkpoint.make_manager(workdir, config.train.max_to_keep)
  initial = finetune.base_params(config, model, abstract.params) if fresh_finetune else None
  state = jax.jit(init_state, out_shardings=shardings)(initial)
  state, extra, start, damaged = checkpoint.restore_or_init(manager, state, shardings)
  if jax.process_index() == 0:
    checkpoint.set_aside(manager, damaged, workdir)
  if extra is not None:
    iterator.set_state(extra["data"])
  print(f"{config.model.name}: {n_params:,} parameters; devices: {mesh.size}; starting at step {start}", flush=True)

  sigma_rels = tuple(config.train.posthoc_ema)
  train_step = step_lib.make_train_step(
      task.loss_fn, optimizer, ema_rate=config.train.ema_rate, ema_warmup=config.train.ema_warmup,
      grad_accum_steps=config.train.grad_accum_steps, posthoc_gammas=tuple(map(posthoc_ema.gamma_of, sigma_rels)))
  jitted = step_lib.jit_train_step(train_step, state, mesh)
  key = jax.random.PRNGKey(config.seed + 1)
  embed = embed_params = None
  if task.embed is not None:
    embed = jax.jit(task.embed, out_shardings=sharding.batch_sharding(mesh))
    embed_params = jax.device_put(task.embed_params, sharding.replicated(mesh))

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  writer = None
  if jax.process_index() == 0:
    import tensorboardX  # TensorBoard event files beside metrics.jsonl

    writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
  sample_every = config.train.sample_every if sample_fn is not None else 0
  last_time, last_step = time.time(), start
  previous = None  # the last step's (number, metrics), checked for finiteness once the next step is queued
  try:
    with _StopFlag() as flag:
      for step in range(start, config.train.num_steps):
        # Only the arrays the step reads go to the devices; captions stay on the host.
        batch = sharding.shard_batch(task.model_batch(next(iterator)), mesh)
        if embed is not None:
          batch = embed(embed_params, batch)
        state, metrics = jitted(state, batch, key)
        done = step + 1
        # Waiting on the previous step while this one runs keeps the devices busy.
        if previous is not None:
          _check_finite(*previous, manager, workdir)
        stop = flag.stop  # read once: a signal that comes later is acted on at the next step
        log = done % config.train.log_every == 0 or done == config.train.num_steps
        save = done % config.train.checkpoint_every == 0 or done == config.train.num_steps or stop
        sample = sample_every and done % sample_every == 0 and jax.process_index() == 0
        snapshot = sigma_rels and (done % config.train.posthoc_every == 0 or done == config.train.num_steps or stop)
        previous = (done, metrics)
        if log or save or sample or snapshot:  # nothing of a non-finite step is logged, saved or sampled
          _check_finite(*previous, manager, workdir)
          previous = None
        if log:
          logged = {k: float(_local(v)) for k, v in metrics.items() if k != "finite"}
          now = time.time()
          rate = (done - last_step) * config.train.batch_size / max(now - last_time, 1e-9)
          eta = (config.train.num_steps - done) * config.train.batch_size / max(rate, 1e-9)
          last_time, last_step = now, done
          if writer is not None:
            with open(metrics_path, "a") as f:
              f.write(json.dumps(dict(step=done, images_per_s=rate, **logged)) + "\n")
            for name, value in dict(logged, images_per_s=rate).items():
              writer.add_scalar(f"train/{name}", value, done)
            writer.flush()
          print(f"step {done}/{config.train.num_steps}  loss {logged['loss']:.4f}  {rate:.1f} img/s  "
                f"ETA {eta / 60:.1f} min", flush=True)
        if save:
          extra = {"data": iterator.get_state()}
          if task.checkpoint_extra is not None:
            extra.update({k: float(_local(v)) for k, v in task.checkpoint_extra(state, batch).items()})
          checkpoint.save(manager, done, state, extra, force=True)
        if snapshot:
          posthoc_ema.write_snapshot(workdir, done, sigma_rels, state.posthoc_ema)
        if sample:
          params = state.ema_params if config.sample.use_ema else state.params
          print(f"samples: {sample_fn(jax.tree.map(_local, params), done)}", flush=True)
        if stop:
          break
  finally:
    manager.wait_until_finished()
    if writer is not None:
      writer.close()
  truncated = tokenizer_lib.truncation_report()
  if truncated:
    print(f"warning: {truncated}; raise data.context_length and the text encoder's context to keep them.")
  print(f"done: step {int(_local(state.step))}, params fingerprint {params_fingerprint(state.params, mesh):.10e}",
        flush=True)
  return state


def _local(x):
  """This process's copy of a replicated array (device_get would refuse an array spanning other hosts)."""
  return np.asarray(x.addressable_data(0))


@functools.lru_cache(maxsize=None)
def _abs_sum(mesh):
  """Σ|p| over a params tree, replicated on `mesh`: one jitted function per mesh, so that a process that trains
  the same model again (a resumed run, an experiment's seeds) reuses its compiled program."""
  return jax.jit(lambda p: sum(jnp.sum(jnp.abs(x.astype(jnp.float32))) for x in jax.tree.leaves(p)),
                 out_shardings=sharding.replicated(mesh))


def params_fingerprint(params, mesh) -> float:
  """Σ|p| over all params, in float32 on each device from its own copy: replicas that diverged (a
  multi-host bug) print different numbers, and two runs that should be identical can be compared."""
  return float(_local(_abs_sum(mesh)(params)))
