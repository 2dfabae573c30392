"""Latent against pixel-space diffusion on captioned shapes: training images/s and sampling seconds per image.

Side by side in one process, alternating: the pixel-space default (configs/shapes_default.py: 24 px, 2×2
patches, its own text encoder) and the latent U-Net (configs/shapes_latent.py: 12×12×4 latents of the
frozen autoencoder, 2×2 patches, cross-attention on a frozen CLIP's token states). A training step is the
loop's (data batch → frozen encoders for the latent model → forward + backward + AdamW + EMA), timed from
the host batch to the updated state; a sampling batch is prompts → images with dpm++2m, 20 steps, w = 3
(the latent model's also encodes the text with the CLIP and decodes with the autoencoder). Medians of
alternating repetitions after a warmup, compilation excluded. Needs trained frozen stages (any step):

  PYTHONPATH=. .venv/bin/python benchmarks/latent_vs_pixel.py --autoencoder=runs/latent/autoencoder \\
      --clip=runs/unclip_vs_glide/unclip_s0/clip [--reps 7]

2-core CPU VM (shared; nothing else ran), jax 0.10.2, 2026-12-06, defaults (batch 16, 7 reps), the
autoencoder of runs/latent/autoencoder (step 2,000) and the CLIP of experiments/unclip_vs_glide (seed 0);
two runs (the second with `:glide_text`, the U-Net's own GLIDE text encoder, as a third column):

                          run 1                           run 2
                   pixel   latent  ratio          pixel   latent  ratio   :glide_text  ratio
  train images/s    75.1    165.0  2.20x           66.9    140.5  2.10x         124.8  1.87x
  sample s/image   0.134    0.048  0.36x          0.108    0.041  0.38x
  params       2,380,376 1,401,440 (the latent U-Net reads the frozen CLIP's states: no text encoder of its own)

configs/shapes_latent.py trains 9,680 steps (:glide_text 8,230) from these ratios: the default's 4,400
steps of compute.
"""

import argparse
import dataclasses
import statistics
import tempfile
import time

import jax

from configs import shapes_default, shapes_latent
from t2i_jax.pipelines import latent, stage as stage_lib, text_to_image
from t2i_jax.train import families, frozen_autoencoder, loop, sharding, state as state_lib, step as step_lib


def _trainer(config, workdir):
  """() -> seconds of one training step of `config` on the next data batch (state kept between calls)."""
  mesh = sharding.make_mesh(1)
  task = families.make_task(config, workdir)
  if task.frozen is not None:
    frozen_autoencoder.write_record(workdir, task.frozen)
  optimizer = state_lib.make_optimizer(config.optim)
  init = state_lib.make_init_fn(task.model, config, optimizer)
  abstract = jax.eval_shape(init)
  holder = {"state": jax.jit(init, out_shardings=sharding.state_sharding(abstract, mesh))()}
  train_step = step_lib.make_train_step(task.loss_fn, optimizer, ema_rate=config.train.ema_rate)
  jitted = step_lib.jit_train_step(train_step, holder["state"], mesh)
  embed = None if task.embed is None else jax.jit(task.embed, out_shardings=sharding.batch_sharding(mesh))
  iterator = loop.make_iterator(config, families.tokenizer_for(config))
  key = jax.random.PRNGKey(0)

  def step():
    start = time.perf_counter()
    batch = sharding.shard_batch(task.model_batch(next(iterator)), mesh)
    if embed is not None:
      batch = embed(task.embed_params, batch)
    holder["state"], metrics = jitted(holder["state"], batch, key)
    jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - start

  return step, holder, task


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--autoencoder", required=True)
  parser.add_argument("--clip", required=True)
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--batch", type=int, default=16)
  args = parser.parse_args()
  pixel_config = shapes_default.get_config()
  latent_config = shapes_latent.get_config()
  latent_config.latent_diffusion.update(dict(autoencoder_workdir=args.autoencoder, clip_workdir=args.clip))
  for config in (pixel_config, latent_config):
    config.train.batch_size = args.batch
  glide_text_config = shapes_latent.get_config("glide_text")
  glide_text_config.latent_diffusion.autoencoder_workdir = args.autoencoder
  glide_text_config.train.batch_size = args.batch
  workdir = tempfile.mkdtemp()
  pixel_step, pixel_state, pixel_task = _trainer(pixel_config, None)
  latent_step, latent_state, latent_task = _trainer(latent_config, workdir)
  glide_text_step = _trainer(glide_text_config, tempfile.mkdtemp())[0]
  steps = {"pixel": pixel_step, "latent": latent_step, "latent_glide_text": glide_text_step}
  for fn in list(steps.values()) * 2:  # compile, then one warm step each
    fn()
  train = {name: [] for name in steps}
  for _ in range(args.reps):
    for name, fn in steps.items():
      train[name].append(fn())

  # Sampling: the trained-state params (any values sample at the same speed), 16 prompts per batch.
  prompts = list(shapes_default.PROMPTS) * (args.batch // len(shapes_default.PROMPTS))
  pixel = stage_lib.Stage("", pixel_config, pixel_task.model, pixel_state["state"].ema_params, 0,
                          families.tokenizer_for(pixel_config))
  record = frozen_autoencoder.read_record(workdir)
  unet = stage_lib.Stage(workdir, latent_config, latent_task.model, latent_state["state"].ema_params, 0,
                         families.tokenizer_for(latent_config))
  model = latent.load_from_record(unet, record)
  settings = text_to_image.SampleSettings(method="dpm++2m", steps=20, guidance=3.0, min_timestep=150)

  def timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start

  draw = {"pixel": lambda: text_to_image.generate(pixel, prompts, settings),
          "latent": lambda: latent.generate(model, prompts, dataclasses.replace(settings, threshold="none"))["image"]}
  for fn in list(draw.values()) * 2:
    timed(fn)
  sample = {"pixel": [], "latent": []}
  for _ in range(args.reps):
    for name, fn in draw.items():
      sample[name].append(timed(fn))
  print(f"devices: {jax.devices()[0].platform} x{jax.device_count()}, batch {args.batch}, {args.reps} reps")
  print("                 pixel   latent   latent/pixel")
  ips = {k: args.batch / statistics.median(v) for k, v in train.items()}
  print(f"train images/s  {ips['pixel']:6.1f}   {ips['latent']:6.1f}   {ips['latent'] / ips['pixel']:.2f}x")
  print(f"  :glide_text (its own text encoder): {ips['latent_glide_text']:.1f} images/s, "
        f"{ips['latent_glide_text'] / ips['pixel']:.2f}x the pixel model's")
  spi = {k: statistics.median(v) / len(prompts) for k, v in sample.items()}
  print(f"sample s/image  {spi['pixel']:6.3f}   {spi['latent']:6.3f}   {spi['latent'] / spi['pixel']:.2f}x")
  print("params         ", *(f"{sum(x.size for x in jax.tree.leaves(s['state'].params)):,}"
                             for s in (pixel_state, latent_state)))


if __name__ == "__main__":
  main()
