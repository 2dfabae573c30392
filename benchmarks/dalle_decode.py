"""Image tokens per second of DALL·E's sampler with the key/value cache against without it, side by side.

Both sample the same [caption ; side² codes] sequence with random params of configs/shapes_dalle.py's
transformer (or --width/--layers): with the cache (pipelines.dalle.sample_tokens: the caption once, then one
position per step), and without (each step runs the whole sequence, codes not yet drawn as zeros, and reads
the logits at its position: what a transformer without a cache must do). Each is compiled first, then
timed `--repeats` times alternately; medians and their ratio.

  PYTHONPATH=. .venv/bin/python benchmarks/dalle_decode.py [--batch 8] [--repeats 3]

Measured 2026-12-07 on the 2-core CPU development machine while a training run shared it (the ratio is the
figure): width 128, 4 layers, 164 positions, batch 8 — with the cache 1,360 image tokens/s, without 181:
7.5× (commit 01f982c).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from configs import shapes_dalle
from t2i_jax import models
from t2i_jax.pipelines import dalle


def uncached_sampler(model):
  """sample(params, text, mask, key) -> tokens [B, N]: every step a full forward pass."""

  @jax.jit
  def sample(params, text, mask, key):
    tokens = jnp.zeros((text.shape[0], model.image_len), jnp.int32)

    def step(tokens, index):
      _, logits = model.apply({"params": params}, text, mask, tokens)
      token = jax.random.categorical(jax.random.fold_in(key, index), logits[:, index]).astype(jnp.int32)
      return tokens.at[:, index].set(token), None

    tokens, _ = jax.lax.scan(step, tokens, jnp.arange(model.image_len))
    return tokens

  return sample


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--width", type=int, default=None)
  parser.add_argument("--layers", type=int, default=None)
  args = parser.parse_args()
  section = shapes_dalle.get_config().model
  section.update({k: v for k, v in dict(width=args.width, layers=args.layers).items() if v is not None})
  model = models.build(section)
  inputs, _ = models.example_inputs(model, args.batch)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), *inputs)["params"]
  text, mask = inputs[0], inputs[1]
  key = jax.random.PRNGKey(1)
  scalars = (jnp.float32(1.0), jnp.int32(0), jnp.float32(1.0), jnp.float32(1.0))
  ways = {"KV cache": lambda: dalle.sample_tokens(model, params, text, mask, key, *scalars, guided=False),
          "no cache": lambda p=uncached_sampler(model): p(params, text, mask, key)}
  for run in ways.values():
    run().block_until_ready()  # compile
  times = {name: [] for name in ways}
  for _ in range(args.repeats):
    for name, run in ways.items():
      start = time.perf_counter()
      run().block_until_ready()
      times[name].append(time.perf_counter() - start)
  tokens = args.batch * model.image_len
  rates = {name: tokens / statistics.median(t) for name, t in times.items()}
  print(f"{jax.devices()[0].device_kind}; width {model.width}, {model.layers} layers, {model.seq_len} positions, "
        f"batch {args.batch}")
  for name, rate in rates.items():
    print(f"| {name} | {rate:,.0f} image tokens/s |")
  print(f"KV cache / no cache: {rates['KV cache'] / rates['no cache']:.1f}×")


if __name__ == "__main__":
  main()
