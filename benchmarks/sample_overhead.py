"""Per-step overhead of `samplers.sample` over calling the denoiser alone.

Both sides are one jit-compiled lax.scan of N denoiser calls on the same small
conv denoiser; the baseline feeds each output straight back as the next input,
so the difference is the sampler's own math (schedule lookups, p_mean_variance,
the update, the per-step PRNG). Timings alternate between the two programs and
report medians, so background load hits both alike.

  .venv/bin/python benchmarks/sample_overhead.py [--batch 8] [--size 32] [--steps 50] [--width 32] [--depth 3]

Stochastic samplers ("ddpm", DDIM with η > 0) also draw a fresh Gaussian per step,
which the denoiser-only loop does not: on a 2-core CPU that is ~13 ns per number
(threefry), so it weighs only next to a tiny denoiser.
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from t2i_jax.diffusion import samplers, schedules


class ConvDenoiser(nn.Module):
  """`depth` 3×3 convs of `width` channels with a timestep embedding: a stand-in
  for a small U-Net (depth 3, width 32 is tiny; depth 6, width 64 is closer to the
  1M-parameter CPU configs)."""

  width: int = 32
  depth: int = 3

  @nn.compact
  def __call__(self, x, t):
    h = nn.Conv(self.width, (3, 3))(x)
    h = h + nn.Embed(1000, self.width)(t)[:, None, None, :]
    for _ in range(self.depth - 2):
      h = nn.Conv(self.width, (3, 3))(nn.silu(h))
    return nn.Conv(x.shape[-1], (3, 3))(nn.silu(h))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--depth", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--rng", default="threefry2x32", help="PRNG implementation of the sampling key: threefry2x32 "
                      "(JAX's default) or rbg (much cheaper per draw on CPU)")
  args = parser.parse_args()

  shape = (args.batch, args.size, args.size, 3)
  model = ConvDenoiser(width=args.width, depth=args.depth)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.zeros((args.batch,), jnp.int32))

  def apply_fn(params, x_t, t, cond):
    del cond
    return model.apply(params, x_t, t)

  denoise_fn = Partial(apply_fn, params)  # params are arguments of the compiled loop, not constants
  betas = schedules.beta_schedule("cosine", 1000)
  s, tmap = schedules.respace(betas, schedules.space_timesteps(1000, str(args.steps)))

  @jax.jit
  def denoiser_only(params, x):
    def body(x, t):
      return model.apply(params, x, jnp.full((args.batch,), t, jnp.int32)), None
    return jax.lax.scan(body, x, tmap[::-1])[0]

  x0 = jax.random.normal(jax.random.PRNGKey(1), shape)
  key = jax.random.key(2, impl=args.rng)
  runs = {"denoiser alone": lambda: denoiser_only(params, x0)}
  for method in ("ddpm", "ddim", "dpm++2m"):
    runs[f"sample({method})"] = (lambda m: lambda: samplers.sample(
        denoise_fn, s, shape, key, method=m, mean_type="eps", var_type="fixed_small",
        timestep_map=tmap))(method)
  for fn in runs.values():
    jax.block_until_ready(fn())  # compile
  times = {name: [] for name in runs}
  for _ in range(args.repeats):
    for name, fn in runs.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  base = np.median(times["denoiser alone"])
  print(f"device: {jax.devices()[0].device_kind}, denoiser {args.depth} convs × {args.width} ch, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.steps} steps, "
        f"median of {args.repeats}, {args.rng} keys")
  for name, ts in times.items():
    med = np.median(ts)
    print(f"{name:>16}: {1e3 * med / args.steps:8.3f} ms/step   overhead {100 * (med / base - 1):+6.2f}%")


if __name__ == "__main__":
  main()
