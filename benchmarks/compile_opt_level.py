"""XLA:CPU compile time of a test-sized U-Net under compile settings, and what each costs in floats.

The test suite's models are tiny, so most of its time is spent compiling, and two backend settings
set much of that: the LLVM optimisation level (XLA flag --xla_backend_optimization_level, default 3)
and the fusion emitters (XLA:CPU's MLIR ones by default; `+elemental` sets
--xla_cpu_use_fusion_emitters=false, the older elemental IR emitters). Each measurement is a fresh
process (the flags are read once, when the backend starts; no persistent compilation cache),
compiling the forward pass and the parameter gradient of the text-conditional U-Net the unit tests
use; settings alternate within each repeat so background load hits them alike, and medians are
reported. The outputs are compared with the first setting's.

  .venv/bin/python benchmarks/compile_opt_level.py [--settings O3 O1 O0 O0+elemental] [--repeats 3]

The suite's own float checks (e.g. tests/diffusion/test_losses.py's VB terms against float64)
are the stricter test of a setting's numerics; see tests/conftest.py for the one the suite uses.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(out_path: str) -> None:
  """Compiles and runs the two programs under this process's XLA_FLAGS; prints a JSON line."""
  import flax
  import jax
  import jax.numpy as jnp

  from t2i_jax import models
  from t2i_jax.models.unet import UNet

  text = flax.core.FrozenDict(vocab_size=64, context_length=8, width=32, layers=1, heads=2, final_ln=True,
                              padding_embedding=True)
  model = UNet(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
               num_head_channels=16, learn_sigma=True, text=text)
  (x, t), kwargs = models.example_inputs(model, 2)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], x.shape)
  t = jnp.array([5, 700], jnp.int32)
  kwargs["tokens"] = jax.random.randint(keys[1], kwargs["tokens"].shape, 1, 64)
  kwargs["token_mask"] = jnp.arange(kwargs["tokens"].shape[1])[None] < jnp.array([[5], [3]])
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, t, **kwargs))
  leaves, tree = jax.tree.flatten(params)
  params = jax.tree.unflatten(tree, [0.05 * jax.random.normal(k, p.shape) for k, p in
                                     zip(jax.random.split(keys[2], len(leaves)), leaves)])

  forward = lambda p: model.apply(p, x, t, **kwargs)
  grad = jax.grad(lambda p: jnp.mean(forward(p) ** 2))
  result, outputs = {}, {}
  for name, fn in (("forward", forward), ("grad", grad)):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params).compile()
    result[name + "_compile_s"] = time.perf_counter() - start
    out = compiled(params)
    outputs[name] = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(out)])
  np.savez(out_path, **outputs)
  print(json.dumps(result))


def xla_flags(setting: str) -> str:
  """"O1" -> its XLA_FLAGS; a "+elemental" suffix adds the older fusion emitters."""
  level, _, extra = setting.partition("+")
  if not (len(level) == 2 and level[0] == "O" and level[1] in "0123") or extra not in ("", "elemental"):
    raise SystemExit(f"setting {setting!r}: use O0..O3, optionally with +elemental (e.g. O0+elemental)")
  flags = f"--xla_backend_optimization_level={level[1]}"
  return flags + (" --xla_cpu_use_fusion_emitters=false" if extra else "")


def _run(setting: str, out_path: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, XLA_FLAGS=xla_flags(setting))
  proc = subprocess.run([sys.executable, __file__, "--child", out_path], env=env, capture_output=True, text=True,
                        check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--settings", nargs="+", default=["O3", "O1", "O0", "O0+elemental"])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args.child)
    return
  for setting in args.settings:
    xla_flags(setting)
  times = {setting: [] for setting in args.settings}
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(args.repeats):
      for setting in args.settings:
        times[setting].append(_run(setting, os.path.join(tmp, f"{setting}.npz")))
    outputs = {setting: np.load(os.path.join(tmp, f"{setting}.npz")) for setting in args.settings}
  base = args.settings[0]
  print(f"| setting | forward compile s | grad compile s | total vs {base} | max |Δ forward| "
        "| max |Δ grad| / max |grad| |")
  print("|---|---|---|---|---|---|")
  base_total = None
  for setting in args.settings:
    fwd = float(np.median([r["forward_compile_s"] for r in times[setting]]))
    grd = float(np.median([r["grad_compile_s"] for r in times[setting]]))
    base_total = base_total or fwd + grd
    d_fwd = float(np.max(np.abs(outputs[setting]["forward"] - outputs[base]["forward"])))
    d_grad = float(np.max(np.abs(outputs[setting]["grad"] - outputs[base]["grad"])) /
                   np.max(np.abs(outputs[base]["grad"])))
    print(f"| {setting} | {fwd:.2f} | {grd:.2f} | {(fwd + grd) / base_total:.2f} | {d_fwd:.1e} | {d_grad:.1e} |")


if __name__ == "__main__":
  main()
