"""What the training loop's non-finite check costs: the step's `finite` read back one step late.

The loop (t2i_jax/train/loop.py) dispatches step k, then waits for step k−1's `finite` flag before it
prepares step k+1, so that no state after a non-finite step is ever saved. This times the real train
step of a config on its real batches three ways, in alternating blocks so that background load hits
each alike, and reports medians of images/s:

  free     no read-back between log points (the loop before the check);
  lagged   step k−1's flag read after step k is dispatched (the loop now);
  blocking step k's own flag read right after its dispatch (a check with no overlap).

  .venv/bin/python benchmarks/finite_check.py [--config configs/shapes_default.py] [--steps 40] [--blocks 5]
"""

import argparse
import importlib.util
import itertools
import os
import sys
import time

import jax
import numpy as np


def _load_config(path):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ imports configs.common
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/shapes_default.py")
  parser.add_argument("--steps", type=int, default=40, help="steps per timed block")
  parser.add_argument("--blocks", type=int, default=5, help="timed blocks per way")
  args = parser.parse_args()

  from t2i_jax.data import input_pipeline
  from t2i_jax import config_keys
  from t2i_jax.train import families, sharding, state as state_lib, step as step_lib

  config = config_keys.complete(_load_config(args.config))
  config.data.name = "shapes_rendered"  # the same examples, without building the TFDS files
  mesh = sharding.make_mesh(config.fsdp)
  task = families.make_task(config)
  tokenizer = families.tokenizer_for(config)
  iterator = input_pipeline.create_iterator(
      input_pipeline.make_source(config.data, "train"), batch_size=config.train.batch_size, seed=0,
      tokenizer=tokenizer, context_length=config.data.context_length, image_size=config.data.image_size)
  optimizer = state_lib.make_optimizer(config.optim)
  init = state_lib.make_init_fn(task.model, config, optimizer)
  shardings = sharding.state_sharding(jax.eval_shape(init), mesh)
  state = jax.jit(init, out_shardings=shardings)()
  jitted = step_lib.jit_train_step(step_lib.make_train_step(task.loss_fn, optimizer), state, mesh)
  key = jax.random.PRNGKey(1)

  def block(way):
    nonlocal state
    previous = None
    start = time.perf_counter()
    for _ in range(args.steps):
      batch = sharding.shard_batch(task.model_batch(next(iterator)), mesh)
      state, metrics = jitted(state, batch, key)
      if way == "lagged" and previous is not None:
        bool(np.asarray(previous))
      if way == "blocking":
        bool(np.asarray(metrics["finite"]))
      previous = metrics["finite"]
    jax.block_until_ready(state)
    return args.steps * config.train.batch_size / (time.perf_counter() - start)

  ways = ("free", "lagged", "blocking")
  for way in ways:  # compile and warm up
    block(way)
  rates = {way: [] for way in ways}
  for way in itertools.islice(itertools.cycle(ways), args.blocks * len(ways)):
    rates[way].append(block(way))
  base = np.median(rates["free"])
  print(f"{args.config}: batch {config.train.batch_size}, {args.steps} steps per block, {args.blocks} blocks, "
        f"{jax.device_count()} device(s), {jax.devices()[0].platform}")
  for way in ways:
    med = np.median(rates[way])
    print(f"  {way:9s} {med:7.1f} images/s (min {min(rates[way]):.1f}, max {max(rates[way]):.1f})  "
          f"{med / base:.3f}x free")


if __name__ == "__main__":
  main()
