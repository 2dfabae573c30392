"""t2i_jax command line: train a config, or sample from a trained workdir.

  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=sample \
      --prompt="a large red circle in the middle" --sampler=ddim --steps=50 --guidance=3
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=eval \
      --eval_setting=dpm++2m:20:3 --eval_setting=ddpm:250:3 [--checkpoint_step=1800]

Config values are overridden on the command line: --config.train.num_steps=100.
Multi-host (TPU pods, multi-node GPU): every process runs the same command with
--distributed; jax.distributed.initialize() picks up the cluster from the
environment, or from --coordinator_address, --num_processes and --process_id.
"""

import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.")
_PROMPTS = flags.DEFINE_multi_string("prompt", None, "Prompt(s) for --mode=sample (default: the config's).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Sampler: ddpm, ddim, dpm++2m, euler or heun.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (1 = none).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None,
                                        "--mode=sample/eval: a saved step to read instead of the latest.")
_SETTINGS = flags.DEFINE_multi_string("eval_setting", None,
                                      "--mode=eval sampler settings METHOD:STEPS:GUIDANCE (default config.eval).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for --distributed outside a managed cluster.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")

flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  import jax  # after absl parsed the flags, so XLA_FLAGS set by a wrapper apply
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every save and read at INFO

  if _DISTRIBUTED.value:
    # CPU processes exchange collectives through gloo; GPUs and TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # On TPU pods, SLURM, Open MPI and Kubernetes, the three values are detected when left unset.
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config = _CONFIG.value
  if _MODE.value == "train":
    from t2i_jax.train import loop

    loop.train(config, _WORKDIR.value)
    if jax.process_index() == 0:
      workdir = os.path.relpath(_WORKDIR.value)
      print(f"checkpoints: {workdir}/checkpoints\nmetrics: {workdir}/metrics.jsonl (TensorBoard: "
            f"{workdir}/tensorboard)\nsamples: {workdir}/samples")
  elif _MODE.value == "eval":
    from t2i_jax.eval import evaluate

    rows, path = evaluate.run(config, _WORKDIR.value, _SETTINGS.value or (), step=_CHECKPOINT_STEP.value)
    print(evaluate.format_table(rows))
    print("wrote", os.path.relpath(path))
  else:
    from t2i_jax.pipelines import sample_workdir

    paths = sample_workdir.sample_to_files(
        config, _WORKDIR.value, prompts=_PROMPTS.value, method=_SAMPLER.value, steps=_STEPS.value,
        guidance_scale=_GUIDANCE.value, seed=_SEED.value, step=_CHECKPOINT_STEP.value)
    print("wrote", os.path.relpath(paths["grid"]), "and", len(paths["images"]), "images")


if __name__ == "__main__":
  app.run(main)
