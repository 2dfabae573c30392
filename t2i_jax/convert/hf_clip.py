"""Hugging Face transformers' CLIPModel checkpoints -> our models.clip.CLIP.

A hub CLIP folder that the user downloaded (config.json plus model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin) converts with no network:

    config, params = hf_clip.load("clip-vit-base-patch32/")      # our model section, our params
    model = models.build(config)
    tokenizer = hf_clip.load_tokenizer("clip-vit-base-patch32/")  # the checkpoint's own tokenizer files
    image_emb, text_emb, logit_scale = model.apply({"params": params}, images_nhwc, tokens, eot_index=...)

`model_config` reads config.json, `clip` maps the state dict name by name. Each of our params is
taken from one named source key, or from the three q/k/v keys of a block, with its layout change:

  vision_model.embeddings.patch_embedding.weight [W, 3, p, p]  -> visual/conv1/kernel [p, p, 3, W]
  vision_model.embeddings.class_embedding [W]                  -> visual/class_embedding
  vision_model.embeddings.position_embedding.weight [N+1, W]   -> visual/positional_embedding
  vision_model.pre_layrnorm (sic), .post_layernorm             -> visual/ln_pre, visual/ln_post
  visual_projection.weight [E, W]                              -> visual/proj [W, E]
  text_model.embeddings.token_embedding.weight [V, W]          -> text/token_embedding/embedding
  text_model.embeddings.position_embedding.weight [ctx, W]     -> text/positional_embedding
  text_model.final_layer_norm                                  -> text/ln_final
  text_projection.weight [E, W]                                -> text/text_projection [W, E]
  logit_scale []                                               -> logit_scale (both the log-temperature)
  {tower}.encoder.layers.i.layer_norm1 / layer_norm2           -> .../block_i/ln_1 / ln_2 (weight -> scale)
  {tower}.encoder.layers.i.self_attn.{q,k,v}_proj [W, W] (+bias) -> .../block_i/c_qkv [W, 3W], head-major
  {tower}.encoder.layers.i.self_attn.out_proj                  -> .../block_i/c_proj
  {tower}.encoder.layers.i.mlp.fc1 / fc2                       -> .../block_i/c_fc / mlp_proj

Linear weights [out, in] become Dense kernels [in, out]. Our c_qkv output reads (head, q|k|v, dim),
so the three projections are concatenated as (q|k|v, head, dim) and regrouped
(common.transformer_block, which GLIDE's converter shares). The position_ids buffers that some
transformers versions save are not params; they are skipped by name.

What our CLIP computes differently from transformers' CLIPModel (the embeddings agree to float32
rounding wherever none of these applies; tests/convert/test_hf_clip.py):
  - Text pooling: transformers reads the state at argmax(input_ids) when the text config's
    eos_token_id is 2 (checkpoints saved before transformers PR #24773) and otherwise at the first
    position of eos_token_id. Ours reads `eot_index`, argmax(tokens) by default, which is the same
    position for OpenAI's vocabulary (its end-of-text id 49407 is the largest). For any other
    vocabulary pass `eot_index(input_ids, hf_config)` from here, or `clip.eot_index_from_mask`,
    which the project's pipelines use: it agrees with transformers while a caption fits the
    context. data.tokenizer.tokenize cuts a longer caption's ids at the context, end-of-text token
    included, where transformers' tokenizer (truncation=True) keeps it in the last place; such a
    caption is then pooled at its last word, not at an end-of-text token.
  - Attention mask: transformers masks padded keys in the text tower; ours is causal only. The
    pooled embedding cannot see positions after the end-of-text token either way, so it agrees;
    the per-token states (`encode_text_states`) agree at real tokens and differ at the padding.
  - Image preprocessing is not part of either model: transformers' CLIPImageProcessor resizes the
    short side to image_size (bicubic), centre-crops, scales to [0, 1] and normalises with
    OpenAI's statistics; ours takes NHWC images already at image_size, and `clip.normalize_images`
    normalises from [-1, 1] with the same statistics (IMAGE_MEAN / IMAGE_STD). A checkpoint whose
    preprocessor_config.json has other image_mean / image_std needs them applied by hand.
    transformers' `interpolate_pos_encoding` (other image sizes) has no counterpart.
  - Fixed by our architecture, refused by `model_config` when the checkpoint differs: layer-norm
    eps 1e-5, an MLP of 4 × width, hidden_act "quick_gelu" or "gelu" (exact) and the same in both
    towers, 3 image channels, square images and patches.
  - The logit scale is stored raw in both; transformers' forward applies exp() without a clip,
    `clip.contrastive_loss` clips exp() at 100 (as OpenAI trained).
"""

import gzip
import importlib.util
import json
import math
import os
from typing import Dict, List, Optional, Tuple

import ml_collections
import numpy as np

from t2i_jax.convert import common
from t2i_jax.models import clip as clip_lib

# Buffers, not params: older transformers versions saved them in CLIP checkpoints, current ones do not.
BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
WHERE = "transformers CLIPModel checkpoint"


# --- config ----------------------------------------------------------------------------------------------------

def _square(value, name: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(set(value)) != 1:
      raise ValueError(f"vision_config.{name}={list(value)} is not square; our CLIP takes square images and "
                       "patches.")
    value = value[0]
  return int(value)


# transformers' name of a whole CLIPModel in config.json (a transformers type, not one of our model families).
TRANSFORMERS_MODEL_TYPE = "clip"


def model_config(hf_config: dict) -> ml_collections.ConfigDict:
  """Our `config.model` section (name "clip") for a transformers CLIPConfig, given as its config.json dict.

  The dict is read by transformers' own CLIPConfig, so defaults that the file leaves out and the old
  text_config_dict / vision_config_dict keys mean what they mean to transformers. Raises a ValueError
  naming the setting when the checkpoint's architecture is one our CLIP cannot compute (see the module
  docstring).
  """
  import transformers

  if not isinstance(hf_config, dict):
    raise ValueError(f"hf_config must be the config.json of a CLIPModel as a dict, got {type(hf_config).__name__}.")
  model_type = hf_config.get("model_type", TRANSFORMERS_MODEL_TYPE)
  if model_type != TRANSFORMERS_MODEL_TYPE:
    raise ValueError(f"config.json has model_type={model_type!r}; this converter reads a whole CLIPModel "
                     "(model_type 'clip', both towers and the projections).")
  config = transformers.CLIPConfig.from_dict(hf_config)
  text, vision = config.text_config, config.vision_config
  acts = {text.hidden_act, vision.hidden_act}
  if len(acts) != 1 or not acts <= set(clip_lib.ACTIVATIONS):
    raise ValueError(f"hidden_act is {text.hidden_act!r} in the text tower and {vision.hidden_act!r} in the vision "
                     f"tower; our CLIP has one activation for both, one of {clip_lib.ACTIVATIONS}.")
  for tower, c in (("text", text), ("vision", vision)):
    if not math.isclose(c.layer_norm_eps, 1e-5):
      raise ValueError(f"{tower}_config.layer_norm_eps={c.layer_norm_eps}; our CLIP's layer norms use 1e-5.")
    if c.intermediate_size != 4 * c.hidden_size:
      raise ValueError(f"{tower}_config.intermediate_size={c.intermediate_size} is not 4 × hidden_size="
                       f"{c.hidden_size}; our CLIP's MLP is 4 × width.")
  if vision.num_channels != 3:
    raise ValueError(f"vision_config.num_channels={vision.num_channels}; our CLIP reads RGB (3 channels).")
  section = clip_lib.default_config()
  section.update(dict(
      image_size=_square(vision.image_size, "image_size"), patch_size=_square(vision.patch_size, "patch_size"),
      vision_width=vision.hidden_size, vision_layers=vision.num_hidden_layers,
      vision_heads=vision.num_attention_heads, text_ctx=text.max_position_embeddings,
      vocab_size=text.vocab_size, text_width=text.hidden_size, text_layers=text.num_hidden_layers,
      text_heads=text.num_attention_heads, embed_dim=config.projection_dim, timestep_conditioned=False,
      activation=acts.pop(), dtype="float32", remat=False))
  return section


def eos_token_id(hf_config: dict) -> Optional[int]:
  """The text config's eos_token_id as transformers reads it (2 means the legacy argmax pooling)."""
  import transformers

  eos = transformers.CLIPConfig.from_dict(hf_config).text_config.eos_token_id
  if isinstance(eos, (list, tuple)):
    if len(eos) != 1:
      raise ValueError(f"text_config.eos_token_id={list(eos)}: transformers' CLIP pools at one end-of-text id.")
    eos = eos[0]
  return eos


def eot_index(input_ids: np.ndarray, hf_config: dict) -> np.ndarray:
  """int32 [B]: where transformers' CLIPTextModel pools input_ids int [B, L], for our `eot_index` argument.

  argmax(input_ids) when the checkpoint's eos_token_id is 2 (transformers' legacy rule), else the first
  position of eos_token_id. transformers reads position 0 for a row without that id; here that row is
  refused, since its embedding would be the start token's.
  """
  ids = np.asarray(input_ids)
  if ids.ndim != 2:
    raise ValueError(f"input_ids must be [B, L], got shape {ids.shape}.")
  eos = eos_token_id(hf_config)
  if eos == 2:
    return np.argmax(ids, axis=-1).astype(np.int32)
  has = (ids == eos).any(axis=-1)
  if not has.all():
    raise ValueError(f"rows {np.flatnonzero(~has).tolist()} of input_ids have no end-of-text id {eos}; tokenize "
                     "with the checkpoint's tokenizer (truncation keeps the end-of-text token).")
  return np.argmax(ids == eos, axis=-1).astype(np.int32)


# --- params ----------------------------------------------------------------------------------------------------

def _blocks(a: common.Assignment, ours: str, theirs: str, layers: int, heads: int) -> None:
  for i in range(layers):
    t = f"{theirs}.layers.{i}"
    common.transformer_block(a, f"{ours}/block_{i}", heads, f"{t}.layer_norm1",
                             [f"{t}.self_attn.{part}_proj" for part in "qkv"], f"{t}.self_attn.out_proj",
                             f"{t}.layer_norm2", f"{t}.mlp.fc1", f"{t}.mlp.fc2")


def clip(state_dict: common.StateDict, config) -> dict:
  """Our CLIP's params from a transformers CLIPModel state dict.

  Args:
    state_dict: {key: array} as `common.read_state_dict` gives it (transformers' key names).
    config: our model section (`model_config` of the checkpoint's config.json).

  Returns:
    the params tree (float32 numpy arrays) that `models.build(config)` applies. Raises a ValueError naming
    the first key that is missing, unused or of the wrong shape (both shapes), and listing the rest.
  """
  model = common.build(config, clip_lib.CLIP)
  if model.timestep_conditioned:
    raise ValueError("config is of a timestep-conditioned CLIP; a transformers CLIPModel converts to a plain CLIP "
                     "(model_config(config.json) gives the section).")
  a = common.Assignment(state_dict, WHERE)
  a.take("logit_scale", "logit_scale")

  v, vt = "visual", "vision_model"
  a.take(f"{v}/conv1/kernel", f"{vt}.embeddings.patch_embedding.weight", common.conv)
  a.take(f"{v}/class_embedding", f"{vt}.embeddings.class_embedding")
  a.take(f"{v}/positional_embedding", f"{vt}.embeddings.position_embedding.weight")
  a.layer_norm(f"{v}/ln_pre", f"{vt}.pre_layrnorm")
  _blocks(a, f"{v}/transformer", f"{vt}.encoder", model.vision_layers, model.vision_heads)
  a.layer_norm(f"{v}/ln_post", f"{vt}.post_layernorm")
  a.take(f"{v}/proj", "visual_projection.weight", common.linear)

  t, tt = "text", "text_model"
  a.take(f"{t}/token_embedding/embedding", f"{tt}.embeddings.token_embedding.weight")
  a.take(f"{t}/positional_embedding", f"{tt}.embeddings.position_embedding.weight")
  _blocks(a, f"{t}/transformer", f"{tt}.encoder", model.text_layers, model.text_heads)
  a.layer_norm(f"{t}/ln_final", f"{tt}.final_layer_norm")
  a.take(f"{t}/text_projection", "text_projection.weight", common.linear)
  return a.params(common.expected_params(model), ignore=BUFFERS)


# --- a downloaded hub folder -----------------------------------------------------------------------------------

def read_checkpoint(folder: str) -> common.StateDict:
  """The state dict of a transformers model folder: model.safetensors, its sharded index, or
  pytorch_model.bin (and its index; needs torch)."""
  for name in ("model.safetensors", "pytorch_model.bin"):
    if os.path.exists(os.path.join(folder, name)):
      return common.read_state_dict(os.path.join(folder, name))
    index = os.path.join(folder, name + ".index.json")
    if os.path.exists(index):
      shards = sorted(set(json.load(open(index))["weight_map"].values()))
      merged = {}
      for shard in shards:
        merged.update(common.read_state_dict(os.path.join(folder, shard)))
      return merged
  raise ValueError(f"{folder} holds no model.safetensors or pytorch_model.bin (nor a sharded index of either); "
                   "download the checkpoint's weights into it.")


def load(folder: str) -> Tuple[ml_collections.ConfigDict, dict]:
  """(our model section, our params) of a transformers CLIPModel folder (config.json + weights)."""
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{folder} has no config.json; give the folder of a transformers CLIPModel checkpoint.")
  config = model_config(json.load(open(path)))
  return config, clip(read_checkpoint(folder), config)


# --- tokenizer -------------------------------------------------------------------------------------------------

# OpenAI CLIP's BPE merges as wheels on PyPI ship them (package, path inside it). The torch extra of
# setup.py brings dalle2-pytorch, which depends on open-clip-torch and clip-anytorch: all three ship it.
OPENAI_BPE_FILES = (("open_clip", "bpe_simple_vocab_16e6.txt.gz"),       # open-clip-torch
                    ("clip", "bpe_simple_vocab_16e6.txt.gz"),            # clip-anytorch, openai-clip
                    ("dalle2_pytorch", "data/bpe_simple_vocab_16e6.txt"),
                    ("x_clip", "data/bpe_simple_vocab_16e6.txt"),
                    ("dalle_pytorch", "data/bpe_simple_vocab_16e6.txt"))
START, END = "<|startoftext|>", "<|endoftext|>"


def find_openai_bpe() -> Optional[str]:
  """The path of an installed copy of OpenAI CLIP's bpe_simple_vocab_16e6.txt(.gz), or None.

  Found without importing the packages (most import torch)."""
  for package, relative in OPENAI_BPE_FILES:
    try:
      spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
      continue
    for folder in (spec.submodule_search_locations or []) if spec else []:
      path = os.path.join(folder, relative)
      if os.path.exists(path):
        return path
  return None


def _bytes_to_unicode() -> Dict[int, str]:
  """GPT-2's reversible byte -> printable character table, which OpenAI's CLIP tokenizer also uses."""
  bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def openai_vocab(bpe_path: str) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
  """(vocab, merges) of OpenAI CLIP's SimpleTokenizer from its BPE file: 256 bytes, the 256 bytes ending a
  word, 48,894 merges, then the start and end tokens: 49,408 ids, end of text the last (49407)."""
  opener = gzip.open if bpe_path.endswith(".gz") else open
  with opener(bpe_path, "rb") as f:
    lines = f.read().decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
  if len(merges) != 48894 or any(len(m) != 2 for m in merges):
    raise ValueError(f"{bpe_path} is not OpenAI CLIP's bpe_simple_vocab_16e6.txt (expected 48,894 merges after "
                     "its header line).")
  tokens = list(_bytes_to_unicode().values())
  tokens += [t + "</w>" for t in tokens] + ["".join(m) for m in merges] + [START, END]
  return {t: i for i, t in enumerate(tokens)}, merges


def load_tokenizer(folder: Optional[str] = None, model_max_length: int = 77):
  """A transformers tokenizer for a converted CLIP, with no download.

  folder: a hub checkpoint folder holding the tokenizer it was trained with (tokenizer.json, or vocab.json
    and merges.txt); loaded from there only. None: OpenAI CLIP's vocabulary from an installed package
    (`find_openai_bpe`), as transformers' CLIPTokenizer: start 49406, end and pad 49407, which
    OpenAI's CLIP checkpoints on the hub use (openai/clip-vit-*, and LAION's OpenCLIP ViTs).
  The result works with data.tokenizer.tokenize (it adds the start and end tokens and pads with
  end-of-text).
  """
  import transformers

  if folder is not None:
    if not os.path.isdir(folder):
      raise ValueError(f"{folder} is not a folder; give the downloaded checkpoint folder with its tokenizer files.")
    return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
  path = find_openai_bpe()
  if path is None:
    raise ValueError("no installed package ships OpenAI CLIP's BPE vocabulary; pip install open-clip-torch (or "
                     "clip-anytorch, or this project's [torch] extra), or pass the checkpoint folder with its "
                     "tokenizer files.")
  vocab, merges = openai_vocab(path)
  return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)

