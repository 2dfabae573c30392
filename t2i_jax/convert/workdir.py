"""Released weights into a workdir, and any workdir's params out to safetensors and back.

A converted workdir is a training workdir like any other: config.json and an Orbax checkpoint (params and
EMA params, step 0) that `--mode=sample`, the cascades, CLIP guidance, frozen stages and `finetune.workdir`
read through `checkpoint.load_variables`; converted.json records where the params came from.

The safetensors file of `export` holds the params flattened to "/"-joined names ("input_conv/kernel"), and
the run's config as JSON in the file's metadata ("t2i_jax_config"), so `import_file` rebuilds the workdir
from the file alone, and any other framework reads the tensors by name.
"""

import json
import os
from typing import Optional

import jax
import ml_collections
import numpy as np

from t2i_jax import config_keys, models
from t2i_jax.convert import common
from t2i_jax.train import checkpoint, families

CONFIG_KEY = "t2i_jax_config"


def abstract_params(config) -> dict:
  """ShapeDtypeStructs of the params of config.model (nothing is initialised)."""
  return common.expected_params(models.build(config.model))


def write_workdir(workdir: str, config, params, record: dict) -> str:
  """Writes config.json, converted.json (`record`: source file, converter, ...) and a step-0 checkpoint of
  `params` (a tree of config.model's params, already checked by the converter) into a new workdir."""
  if checkpoint.has_checkpoint(workdir):
    raise ValueError(f"{workdir} already holds a checkpoint; convert into a new --workdir. Nothing was changed.")
  os.makedirs(workdir, exist_ok=True)
  checkpoint.write_config(workdir, config)
  with open(os.path.join(workdir, "converted.json"), "w") as f:
    json.dump(record, f, indent=1)
  checkpoint.write_params(workdir, 0, jax.tree.map(np.asarray, params), {"converted": record})
  return workdir


def convert(source: common.Source, path: str, config, workdir: str, name: str) -> str:
  """Reads the checkpoint `path` in the format `source`, converts it for the config (--config, or what the
  format says it is: `Source.config`) and writes the workdir. name: the format's, kept in converted.json. A text
  model's tokenizer (config.data.tokenizer, loaded without download) must fit its text encoder; all is checked
  before anything is written."""
  if config is not None:
    config = ml_collections.ConfigDict(config_keys.complete(config).to_dict())  # a copy: the caller's stays
  if source.config is not None:
    config = source.config(path, config)
  config = config_keys.complete(config)
  tokenizer = families.tokenizer_for(config)
  if tokenizer is not None:
    families.of(config).check_text(config, tokenizer)
  params = source.convert(source.read(path), config)
  return write_workdir(workdir, config, params, dict(source=os.path.abspath(path), converter=name))


def export(workdir: str, path: str, use_ema: bool = True, step: Optional[int] = None) -> str:
  """Writes a workdir's params (EMA by default) and config to a .safetensors file; returns its path."""
  from safetensors.numpy import save_file

  if not path.endswith(".safetensors"):
    raise ValueError(f"--out={path}: export writes a .safetensors file; name it NAME.safetensors.")
  config = checkpoint.read_config(workdir)
  _, params, model_state, got = checkpoint.load_variables(config, workdir, step, use_ema)
  if model_state is not None:
    raise ValueError(f"the model in {workdir} keeps non-param variables (an EMA codebook), which safetensors "
                     "export does not carry yet; copy the workdir instead.")
  flat = {k: np.asarray(v) for k, v in common.flat(jax.device_get(params)).items()}
  metadata = {CONFIG_KEY: config.to_json_best_effort(sort_keys=True), "step": str(got),
              "params": "ema" if use_ema else "raw"}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save_file(flat, path, metadata=metadata)
  return path


def read_exported_config(path: str) -> ml_collections.ConfigDict:
  """The t2i_jax config stored in an exported .safetensors file's metadata."""
  from safetensors import safe_open

  with safe_open(path, "numpy") as f:
    metadata = f.metadata() or {}
  if CONFIG_KEY not in metadata:
    raise ValueError(f"{path} holds no t2i_jax config in its metadata (it was not written by --mode=export); "
                     "convert it with the converter of the framework it came from.")
  return config_keys.complete(ml_collections.ConfigDict(json.loads(metadata[CONFIG_KEY])))


def exported(state_dict: common.StateDict, config) -> dict:
  """The converter of our own exported files: each tensor back under its "/"-joined name, checked like any
  other source."""
  assignment = common.Assignment(state_dict, "the exported file")
  for name in state_dict:
    assignment.take(name, name)
  return assignment.params(abstract_params(config))


def _stored_config(path: str, config) -> ml_collections.ConfigDict:
  """The whole config an exported file holds (its diffusion, data and sample sections too), refused when --config
  describes another model."""
  stored = read_exported_config(path)
  if config is not None and config.model.to_json_best_effort(sort_keys=True) != stored.model.to_json_best_effort(
      sort_keys=True):
    raise ValueError(f"{path} holds params of another model config than --config's; import it with the config "
                     "it was exported with (its metadata has it), or leave the model section as it is.")
  return stored


EXPORTED = common.Source(exported, "a .safetensors file of --mode=export (its config is in it)",
                         config=_stored_config)


def import_file(path: str, workdir: str, config=None) -> str:
  """An exported .safetensors file back into a workdir; config (optional) must describe the same model as the
  config in the file."""
  return convert(EXPORTED, path, config, workdir, "t2i_jax")
