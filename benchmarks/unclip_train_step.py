"""unCLIP train steps on CPU: t2i_jax (jit) against lucidrains' dalle2-pytorch, prior and decoder U-Net.

A step is forward + backward + global-norm clip 1.0 + AdamW + EMA of the params on both sides, on
inputs made once (no CLIP runs in either step). Timings alternate between the sides, exclude warmup
and compilation, and report medians. Sizes are the configs' at commit 5e8d0d7.

1. Diffusion prior, batch 256, configs/shapes_prior.py: t2i_jax.models.prior.DiffusionPrior (width
   256, 6 layers, 4 heads, 16 text tokens of width 128, CLIP dim 64) under
   train.prior_loss.make_loss_fn (x0, MSE, cosine, T = 1000, 10% null text), against
   DiffusionPriorNetwork + DiffusionPrior (dim 256, depth 6, 4 heads of 64, max_text_len 16,
   predict_x_start, l2, cosine, T = 1000, text_cond_drop_prob 0.1, sinusoidal time + MLP).
   Same sequence on both: 16 text tokens, text embedding, time, z_t, query. Not matched:
   - dalle2's network width is the CLIP dim and it has no input projections, so it takes 256-d
     embeddings and text encodings, where ours projects 64-d and 128-d inputs to 256;
   - ff_mult=3: dalle2's bias-free SwiGLU then has 9·dim² weights against our 4x GELU MLP's 8·dim²
     (its default ff_mult=4 has 12·dim², 6.30M params in all);
   - dalle2's attention is multi-query with a learned null key and value, cosine-similarity logits
     (scale 16), a T5 relative-position bias and rotary embeddings, and a LayerNorm on its output;
     ours is multi-head softmax(q·k/√d) with learned absolute positions;
   - its time MLP has 3 layers of width 2·dim (ours 2 of dim).
2. Decoder U-Net conditioned on a CLIP image embedding, batch 16, 24 px, configs/shapes_default.py:
   t2i_jax.models.unet.UNet (64 channels, channel_mult (1, 1, 1), one res block per level,
   attention at levels 2 and 3 with heads of 32, scale-shift norm, learned-range variance,
   v-prediction, hybrid loss, logit-normal t, 20% null condition, the GLIDE text encoder: width 128,
   2 layers, 20 tokens) with clip_dim=64, under train.diffusion_loss.make_loss_fn, against Unet +
   Decoder (dim 64, dim_mults (1, 1, 1), num_resnet_blocks 0, self_attn at stages 2 and 3 with 2
   heads of 32, resnet_groups 32, 3x3 input and output convs, nearest + conv upsampling, image
   embedding added to the time embedding and as 4 tokens, cond_dim 128, 20 text encodings of width
   128, learned_variance with vb weight 0.001, predict_v, cosine, T = 1000, 20% null image and text).
   Changed from shapes_default because dalle2's Unet has no such option: patch_size 1 (not 2), so
   both run 24, 12 and 6 px feature maps (our attention at 12 and 6), and no coordinate channels.
   Not matched:
   - dalle2 reads precomputed text encodings (CLIP's); ours trains its own text transformer inside
     the step (0.41M of our params);
   - res blocks: dalle2 has one per stage down and one up plus a final one (9; num_resnet_blocks 0
     is its nearest to ours), ours one down and two up per level (11); both run 3 at 24 px;
   - attention: dalle2 has 5 multi-query self-attentions plus 4 cross-attentions inside res blocks
     (8 heads of 64, fixed by dalle2) to the time, image and (middle only) text tokens; ours has 7
     attention layers whose keys also hold the 20 text and 4 CLIP tokens (GLIDE's);
   - downsampling: pixel-unshuffle + 1x1 conv (ours a strided 3x3 conv); t uniform (ours logit-normal).

The reference installs CPU-only into the same venv, without torchvision (see `import_dalle2`):

  .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  .venv/bin/pip install dalle2-pytorch -c <(.venv/bin/pip freeze | grep '^torch==')  # keeps the CPU torch
  .venv/bin/pip uninstall -y torchvision  # PyPI's is a CUDA build, which cannot load next to a CPU torch
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \\
      .venv/bin/python benchmarks/unclip_train_step.py [--reps 7] [--only prior|decoder]

(The script adds that XLA flag itself when XLA_FLAGS lacks it.) Two runs on a 2-core CPU VM (AMD EPYC,
shared, each run while no other job ran; torch 2.13.0+cpu with 2 threads, jax 0.10.2, dalle2-pytorch 1.15.6),
defaults (7 alternating steps after 3 warmup), 112 s each:

                        params               images/s, run 1      images/s, run 2
               batch  t2i_jax  dalle2     t2i_jax  dalle2  ratio  t2i_jax  dalle2  ratio
  prior          256    4.96M   5.12M       127.5   157.8  0.81x    127.4   150.2  0.85x
  decoder U-Net   16    2.41M   2.33M        38.3    40.1  0.96x     45.7    53.2  0.86x

Parameters: the dalle2 prior has 3.2% more than ours, the dalle2 U-Net 3.4% fewer (ours without its
text encoder: 2.00M). Run only on an idle machine: while another job shared the two cores, torch's
threads lost far more than XLA's (dalle2's prior fell to 22-48 images/s, ours to 63-103), which
inflated the ratio to 2-3x.
"""

import argparse
import os
import sys
import time
import types

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
if FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
  # Keeps single convolutions out of YNNPACK's fusions: the setting the figures above were measured with.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FLAG).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from t2i_jax import config_keys
from t2i_jax.diffusion import schedules  # noqa: E402
from t2i_jax.models.prior import DiffusionPrior  # noqa: E402
from t2i_jax.models.unet import UNet  # noqa: E402
from t2i_jax.train import diffusion_loss, prior_loss  # noqa: E402
from t2i_jax.train.state import create_train_state, make_optimizer  # noqa: E402
from t2i_jax.train.step import make_train_step  # noqa: E402

T = 1000
PRIOR = dict(clip_dim=64, width=256, layers=6, heads=4, text_ctx=16, text_dim=128)  # configs/shapes_prior.py
TEXT = dict(vocab_size=64, context_length=20, width=128, layers=2, heads=4, final_ln=True, padding_embedding=True,
            pool="bow", position_init_std=0.01, pool_dropout=0.0)  # configs/shapes_default.py
DECODER = dict(image_size=24, model_channels=64, num_res_blocks=1, channel_mult=(1, 1, 1),
               attention_resolutions=(12, 6), num_head_channels=32, learn_sigma=True, use_scale_shift_norm=True,
               patch_size=1, coord_channels=False, text=TEXT, clip_dim=64)  # shapes_default's but the last three
CAPTION_LENGTH = 12  # real tokens of the 20; the rest is padding on both sides


def import_dalle2():
  """dalle2_pytorch, importing with an empty torchvision stand-in when torchvision cannot be imported.

  dalle2_pytorch imports torchvision.transforms at import time, for code this benchmark never runs
  (DALLE2's to-PIL conversion, the VQGAN trainer). PyPI's torchvision wheels are CUDA builds whose
  ops fail to register next to a CPU torch, and no CPU build of torchvision is on this machine.
  """
  try:
    import torchvision  # noqa: F401
  except Exception:  # the CUDA wheel raises RuntimeError, not ImportError
    stub = types.ModuleType("torchvision")
    stub.__path__ = []
    stub.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
  import dalle2_pytorch
  return dalle2_pytorch


def scaled_embedding(rng, batch, dim):
  """l2-normalised Gaussian vectors times sqrt(dim): the scale both priors diffuse at."""
  x = rng.randn(batch, dim).astype(np.float32)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True) * np.sqrt(dim)).astype(np.float32)


def jax_runner(model, params, batch, loss_fn, optim):
  """A zero-argument callable running one jitted train_step (state donated), and the param count."""
  optimizer = make_optimizer(optim)
  step = jax.jit(make_train_step(loss_fn, optimizer, ema_rate=0.999, ema_warmup=True), donate_argnums=0)
  state = [create_train_state(params, optimizer)]
  rng = jax.random.PRNGKey(1)

  def run():
    state[0], metrics = step(state[0], batch, rng)
    metrics["loss"].block_until_ready()

  return run, sum(p.size for p in jax.tree.leaves(params))


def torch_runner(module, params, loss_closure, lr, weight_decay, betas):
  """The same step in torch: loss, backward, clip 1.0, AdamW, EMA (torch._foreach_lerp_)."""
  import torch

  params = list(params)
  opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
  ema = [p.detach().clone() for p in params]
  module.train()

  def run():
    opt.zero_grad(set_to_none=True)
    loss_closure().backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, params, 1.0 - 0.999)

  return run, sum(p.numel() for p in params)


def prior_pair(batch_size):
  import torch

  d2 = import_dalle2()
  rng = np.random.RandomState(0)
  e, d, ctx = PRIOR["clip_dim"], PRIOR["text_dim"], PRIOR["text_ctx"]
  model = DiffusionPrior(**PRIOR)
  z0, text_emb = scaled_embedding(rng, batch_size, e), scaled_embedding(rng, batch_size, e)
  tokens = rng.randn(batch_size, ctx, d).astype(np.float32)
  batch = {"image_emb": jnp.asarray(z0),
           "cond": {"text_emb": jnp.asarray(text_emb), "text_tokens": jnp.asarray(tokens),
                    "text_mask": jnp.ones((batch_size, ctx), bool), "drop_text": jnp.zeros((batch_size,), bool)}}
  params = model.init(jax.random.PRNGKey(0), batch["image_emb"], jnp.zeros((batch_size,), jnp.int32),
                      **batch["cond"])["params"]
  diffusion = config_keys.section("diffusion", mean_type="x0", var_type="fixed_small", loss_type="mse",
                                  p_uncond=0.1)
  loss_fn = prior_loss.make_loss_fn(model, schedules.make_schedule(schedules.beta_schedule("cosine", T)), diffusion)
  optim = config_keys.section("optim", lr=3e-4, warmup_steps=500, weight_decay=0.01)
  ours = jax_runner(model, params, batch, loss_fn, optim)

  torch.manual_seed(0)
  w = PRIOR["width"]
  net = d2.DiffusionPriorNetwork(dim=w, depth=PRIOR["layers"], heads=PRIOR["heads"], dim_head=w // PRIOR["heads"],
                                 ff_mult=3, max_text_len=ctx)
  # image_embed_scale=1: the inputs are already scaled (dalle2 would scale them in place, every step).
  prior = d2.DiffusionPrior(net=net, image_embed_dim=w, timesteps=T, text_cond_drop_prob=0.1,
                            image_cond_drop_prob=0.0, predict_x_start=True, condition_on_text_encodings=True,
                            loss_type="l2", beta_schedule="cosine", image_embed_scale=1.0)
  inputs = dict(image_embed=torch.from_numpy(scaled_embedding(rng, batch_size, w)),
                text_embed=torch.from_numpy(scaled_embedding(rng, batch_size, w)),
                text_encodings=torch.randn(batch_size, ctx, w))
  theirs = torch_runner(prior, prior.parameters(), lambda: prior(**inputs), 3e-4, 0.01, (0.9, 0.999))
  return ours, theirs


def decoder_pair(batch_size):
  import torch

  d2 = import_dalle2()
  rng = np.random.RandomState(0)
  size, ctx, clip_dim = DECODER["image_size"], TEXT["context_length"], DECODER["clip_dim"]
  model = UNet(**DECODER)
  images = rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
  mask = np.arange(ctx)[None].repeat(batch_size, 0) < CAPTION_LENGTH
  clip_emb = scaled_embedding(rng, batch_size, clip_dim)
  batch = {"image": jnp.asarray(images),
           "cond": {"tokens": jnp.asarray(rng.randint(1, TEXT["vocab_size"], (batch_size, ctx)) * mask, jnp.int32),
                    "token_mask": jnp.asarray(mask), "clip_emb": jnp.asarray(clip_emb)}}
  params = model.init(jax.random.PRNGKey(0), batch["image"], jnp.zeros((batch_size,), jnp.int32),
                      **batch["cond"])["params"]
  diffusion = config_keys.section("diffusion", mean_type="v", p_uncond=0.2, timestep_sampler="logit-normal",
                                  logit_mean=0.0, logit_std=0.6)  # learned_range, rescaled_mse: the defaults
  loss_fn = diffusion_loss.make_loss_fn(model, schedules.make_schedule(schedules.beta_schedule("cosine", T)),
                                        diffusion)
  ours = jax_runner(model, params, batch, loss_fn, config_keys.section("optim", lr=1e-3, warmup_steps=100, b2=0.99))

  torch.manual_seed(0)
  c = DECODER["model_channels"]
  # cond_dim must differ from image_embed_dim: dalle2 skips the image-to-tokens projection when they are equal
  # and then fails on the untokenised embedding.
  unet = d2.Unet(dim=c, image_embed_dim=clip_dim, text_embed_dim=TEXT["width"], cond_dim=TEXT["width"],
                 dim_mults=(1, 1, 1), num_resnet_blocks=0, self_attn=(False, True, True),
                 attn_dim_head=DECODER["num_head_channels"], attn_heads=c // DECODER["num_head_channels"],
                 resnet_groups=32, cond_on_image_embeds=True, cond_on_text_encodings=True, max_text_len=ctx,
                 init_cross_embed=False, init_conv_kernel_size=3, final_conv_kernel_size=3,
                 pixel_shuffle_upsample=False, channels_out=6)
  decoder = d2.Decoder(unet=unet, image_size=size, timesteps=T, image_cond_drop_prob=0.2, text_cond_drop_prob=0.2,
                       learned_variance=True, vb_loss_weight=0.001, predict_v=True, beta_schedule="cosine")
  encodings = torch.randn(batch_size, ctx, TEXT["width"]) * torch.from_numpy(mask)[..., None]
  inputs = dict(image=torch.from_numpy(images.transpose(0, 3, 1, 2) * 0.5 + 0.5),  # Decoder wants [0, 1]
                image_embed=torch.from_numpy(clip_emb), text_encodings=encodings)
  theirs = torch_runner(decoder, decoder.unets[0].parameters(), lambda: decoder(**inputs), 1e-3, 0.0, (0.9, 0.99))
  return ours, theirs


def time_pair(ours, theirs, reps, warmup):
  """Median seconds per step of each side, the two alternating so that background load hits both."""
  for run in (ours, theirs):
    for _ in range(warmup):
      run()
  times = ([], [])
  for _ in range(reps):
    for run, out in zip((ours, theirs), times):
      start = time.perf_counter()
      run()
      out.append(time.perf_counter() - start)
  return [float(np.median(t)) for t in times]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--prior_batch", type=int, default=256)
  parser.add_argument("--decoder_batch", type=int, default=16)
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--warmup", type=int, default=3)  # dalle2's decoder needs 3
  parser.add_argument("--only", choices=("prior", "decoder"))
  args = parser.parse_args()

  import torch

  torch.set_num_threads(os.cpu_count())
  rows = []
  for name, pair, batch in (("prior", prior_pair, args.prior_batch), ("decoder", decoder_pair, args.decoder_batch)):
    if args.only in (None, name):
      (ours, n_ours), (theirs, n_theirs) = pair(batch)
      t_ours, t_theirs = time_pair(ours, theirs, args.reps, args.warmup)
      rows.append((name, batch, n_ours, n_theirs, batch / t_ours, batch / t_theirs))
  print(f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"jax {jax.__version__} ({jax.devices()[0].device_kind}), XLA_FLAGS={os.environ['XLA_FLAGS']}; "
        f"medians of {args.reps} alternating steps after {args.warmup} warmup")
  print(f"  {'':8} {'batch':>5}  {'params t2i_jax':>14} {'dalle2':>7}  {'images/s t2i_jax':>16} {'dalle2':>7}  "
        f"{'t2i_jax/dalle2':>14}")
  for name, batch, n_ours, n_theirs, ips_ours, ips_theirs in rows:
    print(f"  {name:8} {batch:5d}  {n_ours / 1e6:13.2f}M {n_theirs / 1e6:6.2f}M  {ips_ours:16.1f} {ips_theirs:7.1f}  "
          f"{ips_ours / ips_theirs:13.2f}x")


if __name__ == "__main__":
  main()
