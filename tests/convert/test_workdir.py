"""A workdir's params out to safetensors and back into a workdir that samples like the original; the refusals."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from configs import shapes_clip, shapes_default
from t2i_jax import convert
from t2i_jax.convert import common, workdir as workdir_lib
from t2i_jax.pipelines import stage as stage_lib


def _flat(tree):
  return {"/".join(str(k.key) for k in path): np.asarray(v) for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_export_and_import_give_back_the_same_params_and_config(trained_runlocal, tmp_path):
  workdir, _ = trained_runlocal
  path = workdir_lib.export(workdir, str(tmp_path / "run.safetensors"))
  tensors = load_file(path)
  original = stage_lib.load_stage(workdir)
  assert set(tensors) == set(_flat(original.params))  # "/"-joined names, nothing else
  copy = workdir_lib.import_file(path, str(tmp_path / "copy"), shapes_default.get_config("runlocal"))
  loaded = stage_lib.load_stage(copy)
  assert loaded.config.model.to_json() == original.config.model.to_json()
  for name, value in _flat(original.params).items():
    np.testing.assert_array_equal(_flat(loaded.params)[name], value)
  assert json.load(open(os.path.join(copy, "converted.json")))["converter"] == "t2i_jax"
  # The raw params are another export: they differ from the EMA after three steps.
  raw = load_file(workdir_lib.export(workdir, str(tmp_path / "raw.safetensors"), use_ema=False))
  assert any(not np.array_equal(raw[k], tensors[k]) for k in tensors)


def test_a_mismatch_is_refused_with_the_key_and_both_shapes(trained_runlocal, tmp_path):
  workdir, _ = trained_runlocal
  tensors = load_file(workdir_lib.export(workdir, str(tmp_path / "run.safetensors")))
  config = workdir_lib.read_exported_config(str(tmp_path / "run.safetensors"))
  name = sorted(k for k in tensors if k.endswith("kernel"))[0]
  wrong = dict(tensors, **{name: tensors[name][..., :1]})
  with pytest.raises(ValueError, match=rf"{name}' has shape {tuple(tensors[name].shape)} in our model but "
                                       rf"{tuple(wrong[name].shape)}".replace("(", r"\(").replace(")", r"\)")):
    workdir_lib.exported(wrong, config)
  extra = dict(tensors, **{"stray/kernel": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="our model has no param 'stray/kernel'"):
    workdir_lib.exported(extra, config)
  missing = {k: v for k, v in tensors.items() if k != name}
  with pytest.raises(ValueError, match=f"no value for 1 of our params, first '{name}'"):
    workdir_lib.exported(missing, config)
  assignment = common.Assignment(dict(tensors, unused=np.zeros(2, np.float32)), "test")
  for key in tensors:
    assignment.take(key, key)
  with pytest.raises(ValueError, match=r"1 checkpoint key\(s\) unused, first 'unused'"):
    assignment.params(workdir_lib.abstract_params(config))


def test_bad_inputs_are_one_line_and_write_nothing(trained_runlocal, tmp_path):
  workdir, _ = trained_runlocal
  with pytest.raises(ValueError, match="writes a .safetensors file"):
    workdir_lib.export(workdir, str(tmp_path / "run.npz"))
  path = workdir_lib.export(workdir, str(tmp_path / "run.safetensors"))
  other = shapes_default.get_config("runlocal")
  other.model.model_channels = 64
  with pytest.raises(ValueError, match="another model config than --config's"):
    workdir_lib.import_file(path, str(tmp_path / "other"), other)
  assert not os.path.exists(tmp_path / "other")
  with pytest.raises(ValueError, match="already holds a checkpoint; convert into a new --workdir"):
    workdir_lib.import_file(path, workdir)
  save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "foreign.safetensors"))
  with pytest.raises(ValueError, match="holds no t2i_jax config"):
    workdir_lib.import_file(str(tmp_path / "foreign.safetensors"), str(tmp_path / "foreign"))
  with pytest.raises(ValueError, match="no such checkpoint file"):
    common.read_state_dict(str(tmp_path / "missing.pt"))
  with pytest.raises(ValueError, match="is not a converter; use one of"):
    convert.get("nope")
  with pytest.raises(ValueError, match="GLIDE's noised CLIP is two files"):
    convert.get("glide_clip").read("clip_image_enc.pt")


def test_layouts():
  w = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)  # OIHW
  np.testing.assert_array_equal(common.conv(w)[4, 6, 1, 0], w[0, 1, 4, 6])
  dense = np.arange(6, dtype=np.float32).reshape(2, 3)  # [out, in]
  np.testing.assert_array_equal(common.linear(dense), dense.T)
  np.testing.assert_array_equal(common.linear(dense[..., None]), dense.T)  # a 1x1 conv1d
  # (part, head, dim) -> (head, part, dim): q|k|v of 2 heads of 2 dims.
  fused = np.array(["q0a", "q0b", "q1a", "q1b", "k0a", "k0b", "k1a", "k1b", "v0a", "v0b", "v1a", "v1b"])
  assert list(common.heads_last(fused, 3, 2, "parts-heads")) == [
      "q0a", "q0b", "k0a", "k0b", "v0a", "v0b", "q1a", "q1b", "k1a", "k1b", "v1a", "v1b"]


def test_a_transformers_clip_folder_becomes_a_workdir_that_loads_as_a_stage(tmp_path):
  """The CLI's path for --source=hf_clip: the folder's config.json sets the model section, its weights become a
  workdir, and the stage read from it computes transformers' embeddings."""
  assets = os.path.join(os.path.dirname(__file__), "assets")
  folder = tmp_path / "clip-tiny"
  folder.mkdir()
  shutil.copy(os.path.join(assets, "hf_clip_config.json"), folder / "config.json")
  shutil.copy(os.path.join(assets, "hf_clip.safetensors"), folder / "model.safetensors")
  config = shapes_clip.get_config()  # its data and tokenizer sections; the model section comes from the folder
  out = workdir_lib.convert(convert.get("hf_clip"), str(folder), config, str(tmp_path / "run"), "hf_clip")
  stage = stage_lib.load_stage(out)
  assert (stage.config.model.vision_width, stage.config.model.text_width) == (16, 24)
  with np.load(os.path.join(assets, "hf_clip_io.npz")) as io:
    images, tokens, want = io["pixel_values"].transpose(0, 2, 3, 1), io["input_ids"], io["image_features"]
  image_emb, _, _ = jax.jit(stage.model.apply)({"params": stage.params}, images, tokens.astype(np.int32))
  np.testing.assert_allclose(image_emb, want, atol=1e-5, rtol=1e-5)
  assert json.load(open(os.path.join(out, "converted.json")))["converter"] == "hf_clip"


def test_a_truncated_or_foreign_file_is_one_line(tmp_path):
  source = os.path.join(os.path.dirname(__file__), "assets", "hf_clip.safetensors")
  data = open(source, "rb").read()
  truncated = tmp_path / "cut.safetensors"
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="cut.safetensors cannot be read .* truncated or damaged"):
    common.read_state_dict(str(truncated))
  pickle_file = tmp_path / "model.pt"
  pickle_file.write_bytes(data[:100])
  try:
    import torch
  except ImportError:  # the suite's own environment: a pickle is refused as needing torch
    with pytest.raises(ValueError, match="needs torch to read"):
      common.read_state_dict(str(pickle_file))
    return
  with pytest.raises(ValueError, match="not a readable PyTorch state dict"):
    common.read_state_dict(str(pickle_file))
  torch.save({"step": 3, "lr": 0.1}, str(pickle_file))  # a dict, but of no tensors
  with pytest.raises(ValueError, match="holds a dict, not a state dict of tensors"):
    common.read_state_dict(str(pickle_file))
  torch.save(torch.nn.Linear(2, 2), str(pickle_file))  # a whole module: refused, never unpickled
  with pytest.raises(ValueError, match="pickles more than tensors"):
    common.read_state_dict(str(pickle_file))


def test_a_tokenizer_that_does_not_fit_the_text_tower_is_refused_before_writing(tmp_path):
  from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  assets = os.path.join(os.path.dirname(__file__), "assets")
  folder = tmp_path / "clip-tiny"
  folder.mkdir()
  shutil.copy(os.path.join(assets, "hf_clip_config.json"), folder / "config.json")
  shutil.copy(os.path.join(assets, "hf_clip.safetensors"), folder / "model.safetensors")
  # The folder's own tokenizer, with 150 words for a text tower of 100 tokens.
  words = Tokenizer(tok_models.WordLevel({f"w{i}": i for i in range(150)}, unk_token="w0"))
  words.pre_tokenizer = pre_tokenizers.Whitespace()
  PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w1").save_pretrained(str(folder))
  out = tmp_path / "run"
  with pytest.raises(ValueError, match="the tokenizer has 150 tokens but model.vocab_size=100"):
    workdir_lib.convert(convert.get("hf_clip"), str(folder), shapes_clip.get_config(), str(out), "hf_clip")
  assert not out.exists()
