"""The accelerator benchmark (benchmarks/device.sh runs it): train steps, sampling, compile time and memory.

Every case runs on the first device. A case is compiled once (its compile seconds are reported), run twice
to warm up, then timed over --reps runs, each waited on with block_until_ready; medians.

- Train steps: the project's own step (train.step on the family's loss, the config's optimizer, the EMA) for
  configs/glide_base64.py with float32 and with bfloat16 activations (model.dtype: params and optimizer
  state stay float32), configs/adm_imagenet64.py, configs/shapes_default.py, and glide_base64 in bfloat16 with
  rematerialised blocks (model.remat, the memory lever), on a synthetic batch of each config's shapes (random
  pixels, tokens and labels: the data pipeline is not what is measured). Images/s; MFU: the FLOPs of XLA's
  cost analysis of the compiled step over the device's peak (PEAK_TFLOPS; the float32 cases against TF32's,
  the precision XLA runs float32 matmuls at on NVIDIA GPUs by default); the step's scratch memory in XLA's
  buffer plan (memory_analysis; --compile-only reports it and the FLOPs without allocating, on any machine).
- The PyTorch originals, same architecture and batch, timed in the same run right after ours:
  guided-diffusion's UNetModel at adm_imagenet64's config (`import guided_diffusion`: a checkout of
  openai/guided-diffusion installed with `pip install -e`), and diffusers' UNet2DModel at the ADM widths
  (the torch extra; its blocks differ from ADM's, so both parameter counts are reported). A missing
  package or no CUDA skips the case and says why.
- Sampling seconds per image: GLIDE's 64 → 256 cascade (glide_base64 → glide_upsample256) with
  classifier-free guidance 3, 100 base steps and 27 upsampler steps as GLIDE's paper samples; and the
  unCLIP chain (shapes_clip → shapes_prior → shapes_decoder → shapes_upsampler) at configs/shapes_unclip.py's
  settings. Random weights: the time of a sampling program does not depend on its params' values.
- Peak device memory of each case (memory_stats' peak_bytes_in_use, where the backend reports it). JAX cannot
  reset that peak, so device.sh runs each case in a process of its own (--case, --append); within one process a
  row's peak is the largest of that case and the ones before it.

  bash benchmarks/device.sh                  # a GPU or TPU machine: benchmarks/results/<device>.{json,md}
  bash benchmarks/device.sh --dry-run        # any machine, :runlocal sizes (tests/test_device_bench.py)
  bash benchmarks/device.sh --only train --compile-only   # any machine: FLOPs and memory plans at full size
"""

import argparse
import dataclasses
import importlib
import json
import os
import re
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import first_and_median, median_seconds
from t2i_jax import config_keys, models
from t2i_jax.convert import common
from t2i_jax.pipelines import stage as stage_lib, text_to_image, unclip
from t2i_jax.pipelines.text_to_image import SampleSettings
from t2i_jax.train import families, sharding, state as state_lib, step as step_lib

# Dense peak TFLOP/s per chip: (bfloat16, float32 as XLA runs it). The first key found in
# jax.devices()[0].device_kind wins, so the more specific names come first.
PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.4, 494.7),
    "H200": (989.4, 494.7),
    "A100": (312.0, 156.0),
    "L4": (121.0, 60.0),
    "TPU v6": (918.0, 918.0),
    "TPU v5p": (459.0, 459.0),
    "TPU v5 lite": (197.0, 197.0),
    "TPU v4": (275.0, 275.0),
}

# (name, config, batch on an accelerator, model-section overrides), in the order they run: the ones the
# issue asks for first, so a run the timeout stops still has them. GLIDE at batch 16: XLA:CPU's buffer plan of its
# float32 step at batch 32 holds 51.6 GiB of temporaries (--compile-only, 2026-12-07), too close to an 80 GB card.
TRAIN_CASES = (
    ("glide_base64 f32", "glide_base64", 16, {}),
    ("glide_base64 bf16", "glide_base64", 16, dict(dtype="bfloat16")),
    ("adm_imagenet64", "adm_imagenet64", 32, {}),
    ("shapes_default", "shapes_default", 256, {}),
    ("glide_base64 bf16 remat", "glide_base64", 16, dict(dtype="bfloat16", remat=True)),
)


@dataclasses.dataclass
class Result:
  """One row of the table."""
  case: str
  kind: str  # "train", "torch train", "sample"
  batch: int
  seconds: Optional[float] = None  # median seconds per run
  images_per_s: Optional[float] = None
  seconds_per_image: Optional[float] = None
  params: Optional[int] = None
  tflops_per_run: Optional[float] = None
  mfu: Optional[float] = None
  compile_s: Optional[float] = None
  xla_temp_gib: Optional[float] = None  # the compiled step's scratch memory in XLA's buffer plan
  peak_memory_gib: Optional[float] = None
  note: str = ""


def peak_tflops(device_kind: str, dtype: str) -> Optional[float]:
  """The device's dense peak for matmuls in `dtype`, or None for a device not in PEAK_TFLOPS (no MFU)."""
  for key, peaks in PEAK_TFLOPS.items():
    if key in device_kind:
      return peaks[0] if dtype == "bfloat16" else peaks[1]
  return None


def peak_memory_gib() -> Optional[float]:
  stats = jax.devices()[0].memory_stats() or {}
  return stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None


def load_config(name: str, dry_run: bool, **model):
  config = importlib.import_module(f"configs.{name}").get_config("runlocal" if dry_run else None)
  config.model.update(model)
  return config_keys.complete(config)


def one_device_mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))


def synthetic_batch(config, batch: int, seed: int = 0) -> dict:
  """A host pipeline batch of the config's shapes: images in [-1, 1], caption tokens, labels."""
  rng = np.random.RandomState(seed)
  size = config.data.image_size
  host = {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
          "shapes": rng.randint(0, 3, (batch, 2)).astype(np.int32)}
  num_classes = config.model.get("num_classes")
  if num_classes:
    host[config.data.label_key] = rng.randint(0, num_classes, (batch,)).astype(np.int32)
  text = config.model.get("text")
  if text is not None:
    host["tokens"] = rng.randint(1, text.vocab_size, (batch, config.data.context_length)).astype(np.int32)
    host["token_mask"] = np.ones((batch, config.data.context_length), bool)
  return host


def train_case(name: str, config, batch: int, reps: int, compile_only: bool = False) -> Result:
  """The project's train step of `config` at `batch` on one device (compile_only: from the state's shapes
  alone, nothing allocated or run: compile time, FLOPs and XLA's memory plan only)."""
  config.train.batch_size = batch
  task = families.make_task(config)
  optimizer = state_lib.make_optimizer(config.optim)
  mesh = one_device_mesh()
  init = state_lib.make_init_fn(task.model, config, optimizer)
  abstract = jax.eval_shape(init)
  shardings = sharding.state_sharding(abstract, mesh)
  if compile_only:
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  else:
    state = jax.jit(init, out_shardings=shardings)()
  params = sum(x.size for x in jax.tree.leaves(abstract.params))
  train_step = step_lib.make_train_step(task.loss_fn, optimizer, ema_rate=config.train.ema_rate)
  jitted = step_lib.jit_train_step(train_step, abstract, mesh)
  inputs = sharding.shard_batch(task.model_batch(synthetic_batch(config, batch)), mesh)
  key = jax.random.PRNGKey(0)
  start = time.perf_counter()
  compiled = jitted.lower(state, inputs, key).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  tflops = float(cost.get("flops", 0.0)) / 1e12 if cost else 0.0
  memory = compiled.memory_analysis()
  temp = memory.temp_size_in_bytes / 2**30 if memory is not None else None
  row = Result(name, "train", batch, params=params, tflops_per_run=tflops or None, compile_s=compile_s,
               xla_temp_gib=temp)
  if compile_only:
    return row
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], inputs, key)
    return metrics["loss"]

  row.seconds = median_seconds(run, reps)
  row.images_per_s = batch / row.seconds
  peak = peak_tflops(jax.devices()[0].device_kind, config.model.get("dtype", "float32"))
  row.mfu = tflops / row.seconds / peak if peak and tflops else None
  row.peak_memory_gib = peak_memory_gib()
  return row


def random_stage(config, tokenizer=None, seed: int = 0) -> stage_lib.Stage:
  """A Stage of `config`'s model with params drawn on the host, N(0, 0.02²) (a sampling program's time does not
  depend on its params' values, and the host draw compiles nothing: the model's init would cost a compile)."""
  model = models.build(config.model)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape, np.float32), s.dtype),
                        common.expected_params(model))
  return stage_lib.Stage("", config, model, params, 0, tokenizer)


def text_cond(stage, num: int, seed: int = 1) -> dict:
  """Random caption tokens for a text U-Net (tokenising is host work, not what is timed)."""
  text = stage.model.text
  rng = np.random.RandomState(seed)
  return {"tokens": jnp.asarray(rng.randint(1, text["vocab_size"], (num, text["context_length"])), jnp.int32),
          "token_mask": jnp.ones((num, text["context_length"]), bool)}


def glide_case(num: int, reps: int, dry_run: bool) -> Result:
  """GLIDE's 64 → 256 cascade with classifier-free guidance: [N, 256, 256, 3] from N captions."""
  base = random_stage(load_config("glide_base64", dry_run))
  up = random_stage(load_config("glide_upsample256", dry_run))
  steps = (2, 2) if dry_run else (100, 27)
  base_settings = SampleSettings(method="ddpm", steps=steps[0], guidance=3.0)
  up_settings = SampleSettings(method="ddpm", steps=steps[1], guidance=1.0)
  low_size = up.model.image_size // config_keys.section_of(up.config, "low_res").factor
  base_text = text_cond(base, num)  # the captions' tokens: host work, made once, not timed
  up_text = text_cond(up, num) if up.model.text is not None else {}

  def run():
    low = text_to_image.sample_unet(base.model, base.params, base.diffusion, base_text, num, base_settings)
    if low.shape[1] != low_size:  # :runlocal sizes do not chain; the published pair does (64 → 256)
      low = jax.image.resize(low, (num, low_size, low_size, low.shape[-1]), "linear")
    cond = dict(text_to_image.low_res_cond(up, low), **up_text)
    return text_to_image.sample_unet(up.model, up.params, up.diffusion, cond, num, up_settings)

  first, seconds = first_and_median(run, reps)
  return Result(f"GLIDE 64→256, guidance 3, {steps[0]}+{steps[1]} steps", "sample", num, seconds,
                seconds_per_image=seconds / num, compile_s=first - seconds, peak_memory_gib=peak_memory_gib(),
                note="compile_s: the first run's time less a warm run's")


def unclip_case(num: int, reps: int, dry_run: bool) -> Result:
  """The unCLIP chain at configs/shapes_unclip.py's settings: CLIP text → prior (K candidates, re-ranked) →
  decoder → upsampler."""
  from configs import shapes_unclip
  from t2i_jax.data import tokenizer as tokenizer_lib
  from t2i_jax.eval import evaluate

  tokenizer = tokenizer_lib.load_tokenizer("shapes")
  chain = unclip.Stages(**{name: random_stage(load_config(f"shapes_{name}", dry_run), tokenizer)
                           for name in ("clip", "prior", "decoder", "upsampler")})
  settings = unclip.Settings.from_config(shapes_unclip.get_config("runlocal" if dry_run else None).unclip, chain)
  prompts = evaluate.prompts_for(evaluate.prompt_scenes(num, 0, 0))

  def run():
    return unclip.generate(chain, prompts, settings)["upsampler"]

  first, seconds = first_and_median(run, reps)
  return Result("unCLIP chain (shapes), " + ", ".join(
      f"{s.method}:{s.steps}" for s in (settings.prior, settings.decoder, settings.upsampler)), "sample", num, seconds,
      seconds_per_image=seconds / num, compile_s=first - seconds, peak_memory_gib=peak_memory_gib(),
      note="compile_s: the first run's time less a warm run's")


def torch_cases(batch: int, reps: int, dry_run: bool) -> list:
  """PyTorch's train steps at adm_imagenet64's architecture, or skipped rows saying why."""
  name = "adm_imagenet64"
  try:
    import torch
  except ImportError:
    return [Result(f"{name} (PyTorch)", "torch train", batch, note="skipped: torch is not installed "
                   '(pip install -e ".[torch]")')]
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu" and not dry_run:
    return [Result(f"{name} (PyTorch)", "torch train", batch, note="skipped: torch sees no CUDA device")]
  config = load_config(name, dry_run)
  m = config.model
  size = m.image_size
  rows = []
  builders = {"guided-diffusion UNetModel": _guided_diffusion_unet, "diffusers UNet2DModel": _diffusers_unet}
  for label, build in builders.items():
    try:
      net = build(m).to(device)
    except ImportError as e:
      rows.append(Result(f"{name} ({label})", "torch train", batch, note=f"skipped: {e}"))
      continue
    if device == "cuda":
      torch.cuda.reset_peak_memory_stats()  # this model's peak, not the previous one's
    opt = torch.optim.AdamW(net.parameters(), lr=config.optim.lr)
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.randint(0, config.diffusion.num_timesteps, (batch,), device=device)
    y = torch.randint(0, m.num_classes, (batch,), device=device) if m.get("num_classes") else None

    def run():
      opt.zero_grad(set_to_none=True)
      out = net(x, t, y) if y is not None else net(x, t)
      out = out.sample if hasattr(out, "sample") else out
      loss = ((out[:, :3] - x) ** 2).mean()
      loss.backward()
      opt.step()
      if device == "cuda":
        torch.cuda.synchronize()

    seconds = median_seconds(run, reps)
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    rows.append(Result(f"{name} ({label})", "torch train", batch, seconds, batch / seconds,
                       params=sum(p.numel() for p in net.parameters()), peak_memory_gib=memory,
                       note=f"torch {torch.__version__}, eager, float32"))
  return rows


def _guided_diffusion_unet(m):
  from guided_diffusion.unet import UNetModel  # noqa: import-outside-toplevel (optional reference)

  size = m.image_size
  return UNetModel(image_size=size, in_channels=3, model_channels=m.model_channels,
                   out_channels=6 if m.learn_sigma else 3, num_res_blocks=m.num_res_blocks,
                   attention_resolutions=tuple(size // r for r in m.attention_resolutions), dropout=m.dropout,
                   channel_mult=tuple(m.channel_mult), num_classes=m.get("num_classes"),
                   num_head_channels=m.num_head_channels, use_scale_shift_norm=m.use_scale_shift_norm,
                   resblock_updown=m.resblock_updown)


def _diffusers_unet(m):
  from diffusers import UNet2DModel  # noqa: import-outside-toplevel (the torch extra)

  widths = tuple(m.model_channels * k for k in m.channel_mult)
  size, attn = m.image_size, set(m.attention_resolutions)
  down = tuple("AttnDownBlock2D" if size // 2**i in attn else "DownBlock2D" for i in range(len(widths)))
  up = tuple(("AttnUpBlock2D" if size // 2**i in attn else "UpBlock2D") for i in reversed(range(len(widths))))
  return UNet2DModel(sample_size=size, in_channels=3, out_channels=6 if m.learn_sigma else 3,
                     layers_per_block=m.num_res_blocks, block_out_channels=widths, down_block_types=down,
                     up_block_types=up, attention_head_dim=m.num_head_channels, norm_num_groups=32,
                     resnet_time_scale_shift="scale_shift" if m.use_scale_shift_norm else "default",
                     num_class_embeds=m.get("num_classes"))


def markdown(rows: list, header: str) -> str:
  def fmt(value, spec, unit=""):
    return "" if value is None else format(value, spec) + unit

  lines = [header, "", "| case | batch | params | images/s | s/image | TFLOP/step | MFU | compile s | XLA temp GiB "
           "| peak GiB | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r.case} | {r.batch} | {fmt(r.params and r.params / 1e6, '.1f', 'M')} | "
                 f"{fmt(r.images_per_s, '.1f')} | {fmt(r.seconds_per_image, '.3f')} | {fmt(r.tflops_per_run, '.3g')} | "
                 f"{fmt(r.mfu and 100 * r.mfu, '.1f', '%')} | {fmt(r.compile_s, '.1f')} | {fmt(r.xla_temp_gib, '.2f')} | "
                 f"{fmt(r.peak_memory_gib, '.1f')} | {r.note} |")
  return "\n".join(lines) + "\n"


def _stem(out: str) -> str:
  """out/<device kind, lower-case, non-alphanumerics as _>: where this device's .json and .md go."""
  return os.path.join(out, re.sub(r"[^A-Za-z0-9]+", "_", jax.devices()[0].device_kind).strip("_").lower())


def write(rows: list, args, argv) -> str:
  """benchmarks/results/<device>.json and .md (rewritten after every case: a run stopped by the timeout keeps
  what it measured)."""
  device = jax.devices()[0]
  for r in rows:  # ours over theirs, same case, same run
    ours = next((o for o in rows if o.kind == "train" and o.case == r.case.split(" (")[0]), None)
    if r.kind == "torch train" and r.images_per_s and ours is not None and ours.images_per_s:
      r.note = re.sub(r"; t2i_jax/torch .*", "", r.note) + f"; t2i_jax/torch {ours.images_per_s / r.images_per_s:.2f}x"
  mode = " (dry run: :runlocal sizes)" if args.dry_run else " (compile only)" if args.compile_only else ""
  header = (f"# {device.device_kind}{mode}\n\n"
            f"jax {jax.__version__}, backend {jax.default_backend()}, {time.strftime('%Y-%m-%d')}; "
            f"medians of {args.reps} runs after 2 warmup runs; `bash benchmarks/device.sh {' '.join(argv)}`")
  os.makedirs(args.out, exist_ok=True)
  stem = _stem(args.out)
  with open(stem + ".json", "w") as f:
    json.dump(dict(device=device.device_kind, jax=jax.__version__, dry_run=args.dry_run,
                   compile_only=args.compile_only, rows=[dataclasses.asdict(r) for r in rows]), f, indent=1)
  with open(stem + ".md", "w") as f:
    f.write(markdown(rows, header))
  return stem


def cases(args) -> list:
  """[(name, kind, () -> [Result, ...])] of the run, in order, as --only and --case select them."""
  kinds = set(filter(None, args.only.split(","))) or {"train", "torch", "sample"}
  if args.compile_only:
    kinds &= {"train"}
  out = []
  for name, spec, batch, model in TRAIN_CASES:
    out.append((name, "train", lambda spec=spec, batch=batch, model=model, name=name: [train_case(
        name, load_config(spec, args.dry_run, **model), 2 if args.dry_run else batch, args.reps, args.compile_only)]))
  out.append(("pytorch", "torch", lambda: torch_cases(2 if args.dry_run else 32, args.reps, args.dry_run)))
  out.append(("glide", "sample", lambda: [glide_case(2 if args.dry_run else 16, args.reps, args.dry_run)]))
  out.append(("unclip", "sample", lambda: [unclip_case(2 if args.dry_run else 100, args.reps, args.dry_run)]))
  return [c for c in out if c[1] in kinds and (not args.case or c[0] in args.case)]


def main(argv=None) -> list:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dry-run", action="store_true", help=":runlocal sizes, batch 2, one timed run: checks the "
                      "script on any machine (CPU included); its figures mean nothing")
  parser.add_argument("--compile-only", action="store_true", help="train cases compiled from shapes alone: compile "
                      "time, FLOPs and XLA's memory plan, nothing allocated or run (the memory levers on a CPU)")
  parser.add_argument("--out", default="benchmarks/results", help="folder for <device>.json and <device>.md")
  parser.add_argument("--reps", type=int, default=10)
  parser.add_argument("--only", default="", help="comma-separated kinds of case: train,torch,sample")
  parser.add_argument("--case", action="append", default=[], help="run only this case (repeatable; --list names them)")
  parser.add_argument("--list", action="store_true", help="print the selected cases' names, one a line, and stop")
  parser.add_argument("--append", action="store_true", help="keep the rows already in <device>.json (device.sh runs "
                      "each case in its own process, so that each peak memory is that case's alone)")
  args = parser.parse_args(argv)
  if args.dry_run:
    args.reps = 1
  selected = cases(args)
  if args.list:
    print("\n".join(name for name, _, _ in selected))
    return []
  rows = []
  if args.append and os.path.exists(_stem(args.out) + ".json"):
    with open(_stem(args.out) + ".json") as f:
      rows = [Result(**row) for row in json.load(f)["rows"]]
  for _, _, measure in selected:
    for row in measure():
      rows.append(row)
      print(markdown([row], "").splitlines()[-1], flush=True)
      write(rows, args, argv)
  stem = write(rows, args, argv)
  print(f"wrote {stem}.json and {stem}.md")
  return rows


if __name__ == "__main__":
  main()
