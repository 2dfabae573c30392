"""t2i_jax/convert/hf_clip.py against a tiny random transformers CLIPModel (assets made by
make_hf_clip_assets.py beside this file; no torch or transformers model code needed here)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.convert import common, hf_clip
from t2i_jax.models import clip as clip_lib

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
SAFETENSORS = os.path.join(ASSETS, "hf_clip.safetensors")
BIN = os.path.join(ASSETS, "hf_clip.bin")
# float32 on both sides: the measured max abs differences are 5.7e-7 (image), 9.5e-7 (text) and 1.2e-6
# (logits) on values up to 3.4; 1e-5 leaves room for another XLA or BLAS order of summation.
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def hf_config():
  return json.load(open(os.path.join(ASSETS, "hf_clip_config.json")))


@pytest.fixture(scope="module")
def io():
  with np.load(os.path.join(ASSETS, "hf_clip_io.npz")) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def state_dict():
  return common.read_state_dict(SAFETENSORS)


@pytest.fixture(scope="module")
def converted(hf_config, state_dict):
  config = hf_clip.model_config(hf_config)
  return config, models.build(config), hf_clip.clip(state_dict, config)


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_model_config(hf_config):
  config = hf_clip.model_config(hf_config)
  assert config.to_dict() == dict(
      name="clip", image_size=16, patch_size=8, vision_width=16, vision_layers=2, vision_heads=2, text_ctx=8,
      vocab_size=100, text_width=24, text_layers=2, text_heads=3, embed_dim=16, timestep_conditioned=False,
      num_timesteps=1000, activation="quick_gelu", dtype="float32", remat=False)


def test_embeddings_equal_transformers(converted, hf_config, io):
  _, model, params = converted
  images = jnp.asarray(io["pixel_values"].transpose(0, 2, 3, 1))  # HF's NCHW -> our NHWC
  tokens = jnp.asarray(io["input_ids"], jnp.int32)
  apply = jax.jit(model.apply, static_argnames="method")  # op by op, a CLIP forward is ~100 compiles
  image_emb, text_emb, logit_scale = apply({"params": params}, images, tokens)
  np.testing.assert_allclose(image_emb, io["image_features"], atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(text_emb, io["text_features"], atol=ATOL, rtol=RTOL)
  logits = np.exp(logit_scale) * _normalize(np.asarray(image_emb)) @ _normalize(np.asarray(text_emb)).T
  np.testing.assert_allclose(logits, io["logits_per_image"], atol=ATOL, rtol=RTOL)
  # The pooling index the pipelines pass (from the mask) and transformers' own rule read the same place.
  for index in (hf_clip.eot_index(io["input_ids"], hf_config), clip_lib.eot_index_from_mask(io["attention_mask"])):
    emb, states = apply({"params": params}, tokens, jnp.asarray(index), method="encode_text_states")
    np.testing.assert_allclose(emb, io["text_features"], atol=ATOL, rtol=RTOL)
  # Per-token states agree at the real tokens; at padding transformers masks keys and we do not.
  real = io["attention_mask"].astype(bool)
  np.testing.assert_allclose(np.asarray(states)[real], io["text_states"][real], atol=ATOL, rtol=RTOL)


def test_eot_index_rules(hf_config, io):
  ids = io["input_ids"]
  np.testing.assert_array_equal(hf_clip.eot_index(ids, hf_config), [3, 6, 7])
  # With an end-of-text id that is not the largest, the first-eos rule and argmax part ways.
  ids = np.array([[98, 60, 50, 0, 0], [98, 50, 99, 0, 0]])
  eos50 = json.loads(json.dumps(hf_config))
  eos50["text_config"]["eos_token_id"] = 50
  np.testing.assert_array_equal(hf_clip.eot_index(ids, eos50), [2, 1])
  legacy = json.loads(json.dumps(hf_config))
  legacy["text_config"]["eos_token_id"] = 2  # checkpoints saved before transformers PR #24773: argmax
  np.testing.assert_array_equal(hf_clip.eot_index(ids, legacy), [0, 2])
  with pytest.raises(ValueError, match=r"rows \[1\] of input_ids have no end-of-text id 99"):
    hf_clip.eot_index(np.array([[98, 99], [98, 5]]), hf_config)


def test_pytorch_bin_converts_alike(hf_config, state_dict):
  pytest.importorskip("torch")  # a PyTorch pickle needs torch to read; the safetensors path above does not
  pickled = common.read_state_dict(BIN)
  assert sorted(pickled) == sorted(state_dict)
  config = hf_clip.model_config(hf_config)
  a, b = hf_clip.clip(pickled, config), hf_clip.clip(state_dict, config)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_load_folder(tmp_path, converted):
  _, _, params = converted
  shutil.copy(SAFETENSORS, tmp_path / "model.safetensors")
  shutil.copy(os.path.join(ASSETS, "hf_clip_config.json"), tmp_path / "config.json")
  config, loaded = hf_clip.load(str(tmp_path))
  assert config.text_width == 24
  for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(x, y)
  os.remove(tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match="no model.safetensors or pytorch_model.bin"):
    hf_clip.load(str(tmp_path))


def test_position_ids_buffers_are_skipped(converted, state_dict):
  config, _, params = converted
  with_buffers = dict(state_dict)
  with_buffers["text_model.embeddings.position_ids"] = np.arange(8)[None]
  with_buffers["vision_model.embeddings.position_ids"] = np.arange(5)[None]
  for x, y in zip(jax.tree.leaves(hf_clip.clip(with_buffers, config)), jax.tree.leaves(params)):
    np.testing.assert_array_equal(x, y)


def test_renamed_key_is_refused(converted, state_dict):
  config = converted[0]
  renamed = dict(state_dict)
  renamed["text_model.final_layernorm.weight"] = renamed.pop("text_model.final_layer_norm.weight")
  with pytest.raises(ValueError, match=r"no 'text_model.final_layer_norm.weight' \(for our "
                                       r"'text/ln_final/LayerNorm_0/scale'\)"):
    hf_clip.clip(renamed, config)
  renamed = dict(state_dict)
  renamed["vision_model.encoder.layers.1.self_attn.key.weight"] = renamed.pop(
      "vision_model.encoder.layers.1.self_attn.k_proj.weight")
  with pytest.raises(ValueError, match=r"no 'vision_model.encoder.layers.1.self_attn.k_proj.weight'"):
    hf_clip.clip(renamed, config)


def test_wrong_shape_is_refused(converted, state_dict):
  config = converted[0]
  wrong = dict(state_dict)
  wrong["text_model.embeddings.position_embedding.weight"] = np.zeros((9, 24), np.float32)
  with pytest.raises(ValueError, match=r"'text/positional_embedding' has shape \(8, 24\) in our model but "
                                       r"\(9, 24\) from the checkpoint"):
    hf_clip.clip(wrong, config)
  wrong = dict(state_dict)
  wrong["text_model.encoder.layers.0.self_attn.v_proj.weight"] = np.zeros((24, 12), np.float32)
  with pytest.raises(ValueError, match=r"'text_model.encoder.layers.0.self_attn.k_proj.weight' \(24, 24\), "
                                       r"'text_model.encoder.layers.0.self_attn.v_proj.weight' \(24, 12\) differ"):
    hf_clip.clip(wrong, config)


def test_extra_keys_are_refused(converted, state_dict):
  config = converted[0]
  extra = dict(state_dict)
  extra["text_model.encoder.layers.2.mlp.fc1.weight"] = np.zeros((96, 24), np.float32)
  extra["vision_model.head.weight"] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError, match=r"2 checkpoint key\(s\) unused, first 'text_model.encoder.layers.2.mlp.fc1"
                                       r".weight' \(all: text_model.encoder.layers.2.mlp.fc1.weight, "
                                       r"vision_model.head.weight\)"):
    hf_clip.clip(extra, config)


@pytest.mark.parametrize("tower,key,value,message", [
    ("vision_config", "layer_norm_eps", 1e-6, "layer_norm_eps=1e-06; our CLIP's layer norms use 1e-5"),
    ("text_config", "intermediate_size", 72, "intermediate_size=72 is not 4 × hidden_size=24"),
    ("text_config", "hidden_act", "gelu_new", "'gelu_new' in the text tower and 'quick_gelu' in the vision"),
    ("vision_config", "patch_size", [8, 4], r"patch_size=\[8, 4\] is not square"),
    (None, "model_type", "clip_vision_model", "model_type='clip_vision_model'"),
])
def test_model_config_refuses_what_ours_cannot_compute(hf_config, tower, key, value, message):
  changed = json.loads(json.dumps(hf_config))
  (changed[tower] if tower else changed)[key] = value
  with pytest.raises(ValueError, match=message):
    hf_clip.model_config(changed)


def test_tokenizer_from_folder(tmp_path):
  """A checkpoint folder's own tokenizer files load offline and batch as data.tokenizer.tokenize does; the
  mask's pooling index is transformers' first end-of-text."""
  import transformers

  from t2i_jax.data import tokenizer as tokenizer_lib

  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters] + ["ca", "cat</w>"])}
  vocab.update({hf_clip.START: len(vocab), hf_clip.END: len(vocab) + 1})
  transformers.CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")]).save_pretrained(str(tmp_path))
  tok = hf_clip.load_tokenizer(str(tmp_path))
  tokens, mask = tokenizer_lib.tokenize(tok, ["a cat", "Cat"], 6)
  start, end, cat = vocab[hf_clip.START], vocab[hf_clip.END], vocab["cat</w>"]
  np.testing.assert_array_equal(tokens, [[start, vocab["a</w>"], cat, end, end, end], [start, cat, end, end, end, end]])
  config = {"model_type": "clip", "text_config": {"eos_token_id": end}}
  np.testing.assert_array_equal(clip_lib.eot_index_from_mask(mask), hf_clip.eot_index(tokens, config))
  with pytest.raises(ValueError, match="is not a folder"):
    hf_clip.load_tokenizer(str(tmp_path / "missing"))


def test_openai_tokenizer_from_an_installed_package():
  if hf_clip.find_openai_bpe() is None:
    pytest.skip("no installed package ships OpenAI CLIP's bpe_simple_vocab_16e6.txt (open-clip-torch, "
                "clip-anytorch, dalle2-pytorch, ...)")
  tok = hf_clip.load_tokenizer()
  # OpenAI's SimpleTokenizer (open_clip 3.3) gives these ids, start and end of text included.
  assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
  assert len(tok) == 49408 and tok.pad_token_id == tok.eos_token_id == 49407
