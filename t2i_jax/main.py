"""t2i_jax command line: train a config, or sample from a trained workdir.

  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=sample \
      --prompt="a large red circle in the middle" --sampler=ddim --steps=50 --guidance=3
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=eval \
      --eval_setting=dpm++2m:20:3 --eval_setting=ddpm:250:3 [--checkpoint_step=1800]
  python -m t2i_jax.main --config=configs/shapes_unclip.py --workdir=runs/unclip --mode=sample \
      --prompt="a small red circle left of a large blue square"     # a chain config: its stages' workdirs
  python -m t2i_jax.main --config=configs/shapes_unclip.py --workdir=runs/unclip --mode=sample --image=a.png
  python -m t2i_jax.main --config=configs/shapes_glide.py --workdir=runs/glide --mode=sample    # base → upsampler
  python -m t2i_jax.main --config=configs/shapes_inpaint.py --workdir=runs/inpaint --mode=sample --image=a.png \
      --box=12,0,24,12 --prompt="a red circle left of a blue star"                           # or --mask=m.png
  python -m t2i_jax.main --config=configs/adm_imagenet64.py --workdir=runs/adm64 --mode=convert \
      --source=guided_diffusion --checkpoint=64x64_diffusion.pt                 # released weights (t2i_jax.convert)
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=export --out=demo.safetensors

Config values are overridden on the command line: --config.train.num_steps=100.
A user error (a bad config value or flag, a workdir without a checkpoint, a run
whose loss turned non-finite) is printed as one line and exits with status 2;
--verbose (or T2I_JAX_VERBOSE=1) shows its traceback.
Multi-host (TPU pods, multi-node GPU): every process runs the same command with
--distributed; jax.distributed.initialize() picks up the cluster from the
environment, or from --coordinator_address, --num_processes and --process_id.
"""

import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "posthoc_ema", "convert", "export"],
                          "What to do (posthoc_ema: write the EMA of length --sigma_rel from a run's snapshots; "
                          "convert: released weights --checkpoint into --workdir; export: --workdir's params to --out).")
_PROMPTS = flags.DEFINE_multi_string("prompt", None, "Prompt(s) for --mode=sample (default: the config's).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Sampler: ddpm, ddim, dpm++2m, euler or heun.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (1 = none).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_IMAGE = flags.DEFINE_string("image", None, "--mode=sample on an unCLIP chain: variations of this image; on a text "
                             "U-Net with --mask or --box: inpaint it.")
_IMAGE2 = flags.DEFINE_string("image2", None, "With --image: interpolate from --image to this image instead.")
_MASK = flags.DEFINE_string("mask", None, "With --image: a black (keep) and white (fill) PNG of the region to inpaint.")
_BOX = flags.DEFINE_string("box", None, "With --image: the region to inpaint as LEFT,TOP,RIGHT,BOTTOM pixels.")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None,
                                        "--mode=sample/eval: a saved step to read instead of the latest.")
_SETTINGS = flags.DEFINE_multi_string("eval_setting", None,
                                      "--mode=eval sampler settings METHOD:STEPS:GUIDANCE (default config.eval).")
_SIGMA_REL = flags.DEFINE_float("sigma_rel", None, "--mode=posthoc_ema: the EMA length to reconstruct (EDM2's "
                                "σ_rel, e.g. 0.08); --checkpoint_step picks the step (default: the last snapshot).")
_SOURCE = flags.DEFINE_string("source", None, "--mode=convert: the codebase --checkpoint comes from (t2i_jax.convert"
                              ".SOURCES: guided_diffusion, glide, hf_clip, t2i_jax, ...).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "--mode=convert: the checkpoint file to convert (.pt, .bin, "
                                  ".safetensors, .npz).")
_OUT = flags.DEFINE_string("out", None, "--mode=export: the .safetensors file to write.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for --distributed outside a managed cluster.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")

_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the Python traceback of an error (also T2I_JAX_VERBOSE=1).")

flags.mark_flags_as_required(["config", "workdir"])

# What a user can fix (a config value, a flag, a workdir, a prompt, a run that diverged): printed as one line.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def _quiet_third_party() -> None:
  """Silences what other libraries print on import or use that says nothing about this run."""
  import warnings  # pylint: disable=g-import-not-at-top

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # "PyTorch was not found ..."
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
  for module in ("transformers", "tensorflow_datasets", "grain", "orbax", "cv2", "absl", "jax", "flax", "etils"):
    warnings.filterwarnings("ignore", module=module)
  # This project's own warnings (a truncated caption, an unknown word) stay, as one line each.
  warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


def _run(config, workdir: str) -> None:
  import jax  # after absl parsed the flags, so XLA_FLAGS set by a wrapper apply
  from absl import logging

  logging.set_verbosity(logging.ERROR)  # Orbax and TFDS log every save and read at INFO, and more at WARNING

  if _DISTRIBUTED.value:
    # CPU processes exchange collectives through gloo; GPUs and TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # On TPU pods, SLURM, Open MPI and Kubernetes, the three values are detected when left unset.
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from t2i_jax.pipelines import chains

  chain = chains.of(config)
  if _MODE.value in ("convert", "export"):
    if chain is not None:
      raise ValueError(f"--mode={_MODE.value} works on one model's workdir; give the config of the stage (e.g. "
                       "configs/glide_base64.py), not a chain config.")
    _run_conversion(config, workdir)
  elif chain is not None:
    _run_chain(chain, config, workdir)
  elif _MODE.value == "train":
    from t2i_jax.pipelines import sample_workdir
    from t2i_jax.train import loop

    sample_fn = sample_workdir.periodic_sampler(config, workdir)
    loop.train(config, workdir, sample_fn=sample_fn)
    if jax.process_index() == 0:
      workdir = os.path.relpath(workdir)
      print(f"checkpoints: {workdir}/checkpoints\nmetrics: {workdir}/metrics.jsonl (TensorBoard: "
            f"{workdir}/tensorboard)" + (f"\nsamples: {workdir}/samples" if sample_fn is not None else ""))
  elif _MODE.value == "posthoc_ema":
    from t2i_jax.train import posthoc_ema

    out = posthoc_ema.write_workdir(workdir, _SIGMA_REL.value, _CHECKPOINT_STEP.value)
    print(f"wrote {os.path.relpath(out)}: sample or evaluate it with --workdir={os.path.relpath(out)}")
  elif _MODE.value == "eval":
    from t2i_jax.eval import evaluate

    rows, path = evaluate.run(config, workdir, _SETTINGS.value or (), step=_CHECKPOINT_STEP.value)
    print(evaluate.format_table(rows, evaluate.columns_for(config)))
    print("wrote", os.path.relpath(path))
  elif _IMAGE.present:
    from t2i_jax.pipelines import inpaint_files

    paths = inpaint_files.inpaint_to_files(
        config, workdir, _IMAGE.value, _MASK.value, _BOX.value, prompts=_PROMPTS.value, step=_CHECKPOINT_STEP.value,
        method=_SAMPLER.value, steps=_STEPS.value, guidance=_GUIDANCE.value, seed=_SEED.value)
    print("wrote", os.path.relpath(paths["grid"]), "and", len(paths["images"]), "images")
  else:
    from t2i_jax.pipelines import sample_workdir

    paths = sample_workdir.sample_to_files(
        config, workdir, prompts=_PROMPTS.value, step=_CHECKPOINT_STEP.value, method=_SAMPLER.value,
        steps=_STEPS.value, guidance=_GUIDANCE.value, seed=_SEED.value)
    print("wrote", os.path.relpath(paths["grid"]), "and", len(paths["images"]), "images")


def _run_conversion(config, workdir: str) -> None:
  """--mode=convert (released weights into a new workdir) or --mode=export (a workdir's params to safetensors)."""
  from t2i_jax import convert
  from t2i_jax.convert import workdir as workdir_lib

  if _MODE.value == "export":
    path = workdir_lib.export(workdir, _OUT.value, step=_CHECKPOINT_STEP.value)
    print(f"wrote {os.path.relpath(path)}")
    return
  out = workdir_lib.convert(convert.get(_SOURCE.value), _CHECKPOINT.value, config, workdir, _SOURCE.value)
  print(f"wrote {os.path.relpath(out)}: sample it with --workdir={os.path.relpath(out)} --mode=sample")


def _run_chain(chain, config, workdir: str) -> None:
  """A chain config (configs/shapes_unclip.py, shapes_glide.py, shapes_latent_chain.py; pipelines.chains):
  its trained stages sampled or evaluated; workdir gets the output."""
  if _MODE.value == "train":
    raise ValueError("a chain config names trained stages and trains nothing; train each stage with its own "
                     "config (the commands are in the chain config's docstring), then sample or eval the chain.")
  if _CHECKPOINT_STEP.present:
    raise ValueError("--checkpoint_step picks a step of one workdir; a chain reads each stage's newest checkpoint.")
  if _MODE.value == "eval":
    from t2i_jax.eval import evaluate

    rows, path = evaluate.run_chain(config, workdir, _SETTINGS.value or ())
    print(evaluate.format_table(rows, evaluate.CHAIN_COLUMNS))
    print("wrote", os.path.relpath(path))
    return
  from t2i_jax.pipelines import chain as chain_lib

  paths = chain_lib.sample_to_files(chain, config, workdir, prompts=_PROMPTS.value, seed=_SEED.value,
                                    image=_IMAGE.value, image2=_IMAGE2.value, method=_SAMPLER.value,
                                    steps=_STEPS.value, guidance=_GUIDANCE.value)
  print("wrote", ", ".join(os.path.relpath(p) for p in paths["grids"].values()), "and", len(paths["images"]),
        "images")


def _verbose(argv=()) -> bool:
  return bool(os.environ.get("T2I_JAX_VERBOSE")) or "--verbose" in argv or (
      flags.FLAGS.is_parsed() and _VERBOSE.value)


def _fail(error) -> None:
  """Prints a user error as one line and exits with status 2."""
  print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
  sys.exit(2)


def _parse_error(error: Exception) -> str:
  text = str(error)
  if isinstance(error, (KeyError, AttributeError)):  # a --config.* override of a key the config lacks
    names = re.findall(r"\w+", text)
    hint = re.search(r'Did you mean "(\w+)"', text)
    return (f"unknown config key {names[0]!r}" + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
            + ": a --config.* override must name a key of the config.")
  if "Traceback (most recent call last)" in text:  # the config file raised: its own message is the last line
    text = f"{text.split(':', 1)[0]}: {text.strip().splitlines()[-1]}"
  return text


def _parse_flags(argv):
  """absl's parsing, with a bad flag or config file reported as one line (a traceback with --verbose)."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg[len("--config="):].split(":")[0]
      if not os.path.isfile(path):
        _fail(f"--config={path}: no such config file; give a path such as configs/shapes_default.py "
              "(from the repository root).")
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except  (a bad flag, override or config file)
    if _verbose(argv):
      raise
    _fail(_parse_error(error))


def _check_flags(argv) -> None:
  if len(argv) > 1:
    raise ValueError(f"unexpected argument(s) {argv[1:]}: every setting is a --flag (e.g. --prompt=\"...\").")
  images = (_IMAGE, _IMAGE2, _MASK, _BOX)
  sampling = [f"--{f.name}" for f in (_PROMPTS, _SAMPLER, _STEPS, _GUIDANCE, _CHECKPOINT_STEP, _SEED) + images
              if f.present]
  if _MODE.value == "train" and sampling:
    raise ValueError(f"{', '.join(sampling)}: for --mode=sample only; training samples with config.sample "
                     "(e.g. --config.sample.steps=20).")
  chain = None
  if _MODE.value == "sample" and any(f.present for f in images):
    from t2i_jax.pipelines import chains

    chain = chains.of(_CONFIG.value)
  if _MODE.value == "sample" and _IMAGE2.present and (chain is None or chain.from_images is None):
    raise ValueError("--image2 (interpolation) needs a chain config that samples from images, such as "
                     "configs/shapes_unclip.py.")
  if chain is not None:
    chain.check_images(_IMAGE.value, _IMAGE2.value, _PROMPTS.value)
  if _MODE.value == "sample" and (_MASK.present or _BOX.present) and (chain is not None or not _IMAGE.present):
    raise ValueError("--mask and --box mark the region of --image to inpaint with a text U-Net's config "
                     "(configs/shapes_inpaint.py); give --image too, and no chain config.")
  if (_MODE.value == "posthoc_ema") != _SIGMA_REL.present:
    raise ValueError("--mode=posthoc_ema reconstructs the EMA of length --sigma_rel (e.g. 0.08); give both or "
                     "neither.")
  converting = _MODE.value == "convert"
  if converting != _SOURCE.present or converting != _CHECKPOINT.present:
    raise ValueError("--mode=convert reads --checkpoint=FILE from --source=NAME (t2i_jax.convert.SOURCES) into a new "
                     "--workdir; give all three, or none of --source and --checkpoint.")
  if (_MODE.value == "export") != _OUT.present:
    raise ValueError("--mode=export writes --workdir's params to --out=FILE.safetensors; give both or neither.")
  if _MODE.value == "eval" and any(f.present for f in (_PROMPTS, _SAMPLER, _STEPS, _GUIDANCE) + images):
    raise ValueError("--mode=eval samples its own prompt set; give sampler settings as "
                     "--eval_setting=METHOD:STEPS:GUIDANCE.")


def main(argv):
  try:
    _check_flags(argv)
    _run(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as error:
    if _verbose():
      raise
    _fail(error)


def cli() -> None:
  """The command line (`python -m t2i_jax.main` with sys.argv): exits with status 0, or 2 on a user error."""
  _quiet_third_party()
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  cli()
