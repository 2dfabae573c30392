"""U-Net forward+backward+Adam step: t2i_jax (jit) against a PyTorch U-Net of the same shape.

The reference is diffusers' UNet2DModel configured like our ADM U-Net (widths,
res blocks per level, attention level, scale-shift norm); both sides train on
L_simple with Adam, on the same batch size and resolution, on the same machine.
Timings alternate between the two sides and report medians.

  .venv/bin/pip install -e ".[torch]"   # torch (CPU build) and diffusers
  .venv/bin/python benchmarks/unet_train_step.py [--batch 16] [--size 32] [--channels 64] [--steps 10]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from t2i_jax.models.unet import UNet


def jax_runner(args):
  model = UNet(image_size=args.size, model_channels=args.channels, num_res_blocks=2, channel_mult=(1, 2, 2),
               attention_resolutions=(args.size // 2,), num_head_channels=32, use_scale_shift_norm=True)
  x = jnp.asarray(np.random.RandomState(0).randn(args.batch, args.size, args.size, 3), jnp.float32)
  t = jnp.arange(args.batch, dtype=jnp.int32)
  params = model.init(jax.random.PRNGKey(0), x, t)
  tx = optax.adam(1e-4)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, t):
    def loss_fn(p):
      return jnp.mean((model.apply(p, x, t) - x) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  state = [params, opt_state]

  def run():
    state[0], state[1], loss = step(state[0], state[1], x, t)
    loss.block_until_ready()

  n = sum(p.size for p in jax.tree.leaves(params))
  return run, n


def torch_runner(args):
  import torch
  from diffusers import UNet2DModel

  torch.manual_seed(0)
  c = args.channels
  model = UNet2DModel(
      sample_size=args.size, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(c, 2 * c, 2 * c),
      down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=32,
      resnet_time_scale_shift="scale_shift", norm_num_groups=32,
  )
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  x = torch.randn(args.batch, 3, args.size, args.size)
  t = torch.arange(args.batch)

  def run():
    opt.zero_grad(set_to_none=True)
    loss = ((model(x, t).sample - x) ** 2).mean()
    loss.backward()
    opt.step()

  n = sum(p.numel() for p in model.parameters())
  return run, n, torch.get_num_threads()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()

  jax_run, jax_params = jax_runner(args)
  torch_run, torch_params, threads = torch_runner(args)
  for run in (jax_run, torch_run):  # compile / warm up
    run()
    run()
  times = {"jax": [], "torch": []}
  for _ in range(args.steps):
    for name, run in (("jax", jax_run), ("torch", torch_run)):
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  med = {k: float(np.median(v)) for k, v in times.items()}
  print(f"device: {jax.devices()[0].device_kind}; torch threads {threads}; batch {args.batch}, {args.size}x{args.size}, "
        f"model_channels {args.channels}; medians of {args.steps} alternating steps")
  print(f"  t2i_jax UNet      {jax_params / 1e6:6.2f}M params  {args.batch / med['jax']:8.1f} images/s")
  print(f"  diffusers UNet2D  {torch_params / 1e6:6.2f}M params  {args.batch / med['torch']:8.1f} images/s")
  print(f"  ratio jax/torch: {med['torch'] / med['jax']:.2f}x")


if __name__ == "__main__":
  main()
