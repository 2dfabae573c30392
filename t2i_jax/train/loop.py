"""The training loop for a diffusion U-Net config: build, resume, step, log, checkpoint, stop cleanly.

Everything lives under --workdir: checkpoints/, metrics.jsonl and config.json. A
run resumes by itself from the latest checkpoint (state and data iterator), and
SIGTERM / SIGINT make it save and exit at the next step boundary.
"""

import json
import os
import signal
import time
from typing import Any

import jax

from t2i_jax import models
from t2i_jax.data import input_pipeline, tokenizer as tokenizer_lib
from t2i_jax.diffusion import schedules
from t2i_jax.pipelines import sample_workdir
from t2i_jax.train import checkpoint, diffusion_loss, sharding, state as state_lib, step as step_lib


def build_schedule(config):
  """The diffusion section's Schedule."""
  return schedules.make_schedule(schedules.beta_schedule(config.schedule, config.num_timesteps))


def _check_config(config, tokenizer) -> None:
  if config.model.name != "unet":
    raise ValueError(f"the diffusion trainer trains model.name='unet', got {config.model.name!r}.")
  text = config.model.get("text")
  if text is not None:
    if len(tokenizer) > text.vocab_size:
      raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but model.text.vocab_size={text.vocab_size}; "
                       f"raise vocab_size to at least {len(tokenizer)}.")
    if config.data.context_length != text.context_length:
      raise ValueError(f"data.context_length={config.data.context_length} must equal model.text.context_length="
                       f"{text.context_length}.")


def _to_model_batch(batch: dict) -> dict:
  """Pipeline batch -> dict(image, cond) with the U-Net's conditioning kwargs."""
  cond = {k: batch[k] for k in ("tokens", "token_mask", "y") if k in batch}
  return {"image": batch["image"], "cond": cond}


def _write_config(workdir: str, config) -> None:
  """Keeps the config beside the checkpoints; a resumed run with another model config is refused."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(sort_keys=True, indent=2)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old.get("model") != json.loads(text)["model"]:
      raise ValueError(f"{workdir} was written by a run with another model config (see {path}); "
                       "use a new --workdir or the same config. Nothing was changed.")
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


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


def train(config, workdir: str) -> Any:
  """Trains config.train.num_steps steps (resuming if the workdir has a checkpoint); returns the final state."""
  os.makedirs(workdir, exist_ok=True)
  tokenizer = tokenizer_lib.load_tokenizer(config.data.tokenizer)
  _check_config(config, tokenizer)
  mesh = sharding.make_mesh(config.get("fsdp", 1))
  sharding.check_batch_size(config.train.batch_size, mesh)
  model = models.build(config.model)
  schedule = build_schedule(config.diffusion)

  local_batch = config.train.batch_size // jax.process_count()
  source = input_pipeline.ShapesSource("train", config.data.seed, config.data.num_train, config.data.image_size)
  iterator = input_pipeline.create_iterator(
      source, batch_size=local_batch, seed=config.seed, tokenizer=tokenizer,
      context_length=config.data.context_length, process_index=jax.process_index(),
      process_count=jax.process_count())

  optimizer = state_lib.make_optimizer(config.optim)
  init_state = state_lib.make_init_fn(model, config, optimizer)
  # Shapes first, then one compiled init that writes every array straight to its shards.
  abstract = jax.eval_shape(init_state)
  n_params = sum(leaf.size for leaf in jax.tree.leaves(abstract.params))
  shardings = sharding.state_sharding(abstract, mesh)
  state = jax.jit(init_state, out_shardings=shardings)()

  _write_config(workdir, config)
  manager = checkpoint.make_manager(workdir, config.train.max_to_keep)
  state, extra, start = checkpoint.restore_or_init(manager, state, shardings)
  if extra is not None:
    iterator.set_state(extra["data"])
  print(f"model: {n_params:,} parameters; devices: {mesh.size}; starting at step {start}", flush=True)

  loss_fn = diffusion_loss.make_loss_fn(model, schedule, config.diffusion)
  train_step = step_lib.make_train_step(
      loss_fn, optimizer, ema_rate=config.train.ema_rate, ema_warmup=config.train.ema_warmup,
      grad_accum_steps=config.train.grad_accum_steps)
  jitted = step_lib.jit_train_step(train_step, state, mesh)
  key = jax.random.PRNGKey(config.seed + 1)

  def save(step):
    checkpoint.save(manager, step, state, {"data": iterator.get_state()}, force=True)

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  writer = None
  if jax.process_index() == 0:
    import tensorboardX  # TensorBoard event files beside metrics.jsonl

    writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
  sample_every = config.train.get("sample_every", 0)
  last_time, last_step = time.time(), start
  with _StopFlag() as flag:
    for step in range(start, config.train.num_steps):
      batch = sharding.shard_batch(_to_model_batch(next(iterator)), mesh)
      state, metrics = jitted(state, batch, key)
      done = step + 1
      if done % config.train.log_every == 0 or done == config.train.num_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.time()
        rate = (done - last_step) * config.train.batch_size / max(now - last_time, 1e-9)
        eta = (config.train.num_steps - done) * config.train.batch_size / max(rate, 1e-9)
        last_time, last_step = now, done
        with open(metrics_path, "a") as f:
          f.write(json.dumps(dict(step=done, images_per_s=rate, **metrics)) + "\n")
        if writer is not None:
          for name, value in dict(metrics, images_per_s=rate).items():
            writer.add_scalar(f"train/{name}", value, done)
          writer.flush()
        print(f"step {done}/{config.train.num_steps}  loss {metrics['loss']:.4f}  {rate:.1f} img/s  "
              f"ETA {eta / 60:.1f} min", flush=True)
      if done % config.train.checkpoint_every == 0 or done == config.train.num_steps or flag.stop:
        save(done)
      if sample_every and done % sample_every == 0 and jax.process_index() == 0:
        params = state.ema_params if config.sample.use_ema else state.params
        paths = sample_workdir.write_samples(
            model, jax.device_get(params), config, workdir, done, list(config.sample.prompts),
            config.sample.method, config.sample.steps, config.sample.guidance, tokenizer=tokenizer)
        print(f"samples: {paths['grid']}", flush=True)
      if flag.stop:
        break
  manager.wait_until_finished()
  if writer is not None:
    writer.close()
  return state
