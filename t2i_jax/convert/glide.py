"""GLIDE's released models into ours: the text-conditional U-Nets (-> models.unet.UNet with `text`) and the
noised CLIP (-> models.clip.CLIP, timestep_conditioned).

    params = glide.text_unet(common.read_state_dict("base.pt"), configs.glide_base64.get_config())
    params = glide.text_unet(common.read_state_dict("upsample.pt"), configs.glide_upsample256.get_config())
    clip_sd = glide.clip_state_dict(common.read_state_dict("clip_image_enc.pt"),
                                    common.read_state_dict("clip_text_enc.pt"))
    params = glide.noised_clip(clip_sd, config)           # config.model: clip.glide_noised_config()

Reads the state dicts of openai/glide-text2im at 69b530740eb6cef69442d6180579ef5ba9ef063e:
- text2im_model.Text2ImUNet (base.pt), SuperResText2ImUNet (upsample.pt), InpaintText2ImUNet
  (base_inpaint.pt) and SuperResInpaintText2ImUnet (upsample_inpaint.pt; the same mapping, no parity asset).
  The config says which: `super_res` and `inpaint` add the low-resolution image and the masked image plus mask
  to the first conv's input in the reference's order. The trunk is guided-diffusion's UNetModel, mapped by
  openai_unet.trunk; every AttentionBlock also has encoder_kv, a 1x1 conv1d from the text width to 2·C. The
  text transformer (xf.py) maps to GlideTextEncoder: token_embedding, positional_embedding, padding_embedding,
  transformer.resblocks.i.{ln_1, attn.c_qkv, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj} (common.transformer_block),
  final_ln; transformer_proj is our text_proj.
- clip/encoders.ImageEncoder and TextEncoder (clip_image_enc.pt, clip_text_enc.pt), joined by
  `clip_state_dict` under "image_encoder." and "text_encoder.".

Layouts: conv kernels [O, I, kh, kw] -> [kh, kw, I, O]; Linear [O, I] and 1x1 conv1d [O, I, 1] -> Dense
[I, O]; CLIP's Affine `w` is [O, I] as a Linear. The fused projections need no regrouping where GLIDE fuses
them: its QKVAttention (despite the name, the legacy order) reads the qkv conv's 3·C outputs as
(head, q|k|v, dim) and encoder_kv's 2·C as (head, k|v, dim), and xf.py's QKVMultiheadAttention views c_qkv's
output as (head, q|k|v, dim): all three are layers.AttentionBlock's / TransformerBlock's own order. The CLIP's
separate f_q, f_k, f_v are concatenated and regrouped into our head-major c_qkv.

What the config must say, and what differs:
- attention_resolutions: ours are the feature maps' sides in pixels, the numbers of GLIDE's option string
  ("32,16,8"), which its create_model turns into the downsampling factors ds = image_size // res its model
  stores. num_head_channels must be the checkpoint's (64 in every released model): the head count shows in
  no shape. GLIDE's num_heads_upsample has no counterpart (ignored when num_head_channels is set, as in all
  released models). text.pool must be "last" (GLIDE's xf_out[:, -1]), and captions padded to the full text
  context with the mask False on padding, as GLIDE feeds them: ours pools the last position it is given.
  xf_ar's unemb head (not in the released models) has no counterpart and is refused as an unused key.
- GLIDE samples with use_fp16 (the torso and the text transformer in float16); ours computes in
  config.model.dtype: the same params, outputs that differ by float16 rounding.
- The noised CLIP is represented exactly. Its attention has no key bias: our c_qkv's key bias is set to zero.
  Its logit scale is not in either file (clip/config.yaml's logit_scale: 100.0): pass `logit_scale`; ours
  stores its log. GLIDE's image tower takes [0, 255] pixels and normalises them inside; ours takes them
  already normalised: feed clip.normalize_images(x) where GLIDE feeds (x + 1)·127.5 (the same statistics,
  GLIDE's ×255). Its text tower reads the state at text_len - 1: pass eot_index = text_len - 1. The config
  needs timestep_conditioned=True and activation="gelu" (exact GELU), which the converter checks.
"""

import numpy as np

from t2i_jax.convert import common, openai_unet
from t2i_jax.models.clip import CLIP
from t2i_jax.models.unet import UNet

# GLIDE's clip/config.yaml.
GLIDE_CLIP_LOGIT_SCALE = 100.0


def text_unet(state_dict: common.StateDict, config) -> dict:
  """Our UNet's params from a GLIDE Text2ImUNet / SuperResText2ImUNet / InpaintText2ImUNet state dict.

  Args:
    state_dict: {key: array} in PyTorch layouts (float16 or float32; cast to our float32).
    config: a config with a `model` section, or the section itself: name "unet", `text` with GlideTextEncoder
      fields (pool "last"), `super_res` / `inpaint` as the checkpoint's class, the reference's architecture
      (see the module docstring).

  Returns:
    the params tree that models.build(config.model).apply takes as {"params": ...}, float32.
  """
  model = common.build(config, UNet)
  if model.text is None:
    raise ValueError("this converter reads GLIDE's text-conditional U-Nets: set config.model.text to the "
                     "GlideTextEncoder fields of the checkpoint (configs/glide_base64.py's GLIDE_TEXT).")
  if model.text.get("pool", "last") != "last":
    raise ValueError(f"config.model.text.pool={model.text['pool']!r}, but GLIDE projects the last position's "
                     "state into the timestep embedding: set pool='last'.")
  expected = common.expected_params(model)
  a = common.Assignment(state_dict, f"GLIDE {_reference_class(model)}")
  # GLIDE's QKVAttention is, despite the name, guided-diffusion's legacy (head, part, dim) order.
  openai_unet.trunk(a, model, common.flat(expected), "heads-parts")
  _text_encoder(a, model.text)
  a.dense("text_proj", "transformer_proj")
  return a.params(expected)


def clip_state_dict(image_encoder: common.StateDict, text_encoder: common.StateDict) -> common.StateDict:
  """GLIDE's two noised-CLIP files (clip_image_enc.pt, clip_text_enc.pt) as the one state dict `noised_clip`
  reads: keys prefixed "image_encoder." and "text_encoder." (CLIPModel's attribute names)."""
  joined = {f"image_encoder.{k}": v for k, v in image_encoder.items()}
  joined.update({f"text_encoder.{k}": v for k, v in text_encoder.items()})
  return joined


def noised_clip(state_dict: common.StateDict, config, *, logit_scale: float = GLIDE_CLIP_LOGIT_SCALE) -> dict:
  """Our CLIP's params from GLIDE's noised CLIP (`clip_state_dict` of its image and text encoders).

  Args:
    state_dict: {"image_encoder.blocks...": array, "text_encoder.blocks...": array} in PyTorch layouts.
    config: a config with a `model` section, or the section itself: name "clip", timestep_conditioned=True,
      activation="gelu", widths, depths, heads, patch size, text context, vocabulary and num_timesteps as the
      checkpoint's (clip.glide_noised_config() for the released one).
    logit_scale: the factor GLIDE's CLIPModel multiplies the cosine similarity by in its guidance (clip/config.yaml:
      100); its files do not hold it.

  Returns:
    the params tree of models.build(config.model), float32; params["logit_scale"] = log(logit_scale).
  """
  model = common.build(config, CLIP)
  if not model.timestep_conditioned or model.activation != "gelu":
    raise ValueError(f"GLIDE's noised CLIP reads timesteps and uses exact GELU; the config has "
                     f"timestep_conditioned={model.timestep_conditioned}, activation={model.activation!r}: set "
                     "timestep_conditioned=True and activation='gelu' (see clip.glide_noised_config()).")
  expected = common.expected_params(model)
  a = common.Assignment(state_dict, "GLIDE noised CLIP")
  image, text = "image_encoder.blocks", "text_encoder.blocks"
  # ImageEmbedding: a per-timestep vector (w_t) in the class token's place, the positions, then its LayerNorm.
  a.take("visual/conv1/kernel", f"{image}.input.patch_proj", common.conv)
  a.take("visual/timestep_embedding", f"{image}.input.w_t")
  a.take("visual/positional_embedding", f"{image}.input.w_pos")
  a.layer_norm("visual/ln_pre", f"{image}.input.ln", "g", "b")
  for i in range(model.vision_layers):
    _clip_block(a, f"visual/transformer/block_{i}", f"{image}.block_{i}", model.vision_heads)
  # ImageFeatureExtractor: LayerNorm of the first token, then a bias-free Affine [E, W].
  a.layer_norm("visual/ln_post", f"{image}.output.ln", "g", "b")
  a.take("visual/proj", f"{image}.output.f.w", common.linear)
  a.take("text/token_embedding/embedding", f"{text}.input.w_voc")
  a.take("text/positional_embedding", f"{text}.input.w_pos")
  for i in range(model.text_layers):
    _clip_block(a, f"text/transformer/block_{i}", f"{text}.block_{i}", model.text_heads)
  # TextFeatureExtractor: LayerNorm of the state at text_len - 1, then a bias-free Affine.
  a.layer_norm("text/ln_final", f"{text}.output.ln", "g", "b")
  a.take("text/text_projection", f"{text}.output.f.w", common.linear)
  a.put("logit_scale", np.asarray(np.log(logit_scale), np.float32))  # from the reference's config, no key
  return a.params(expected)


# --- pieces ---------------------------------------------------------------------------------------------------

def _reference_class(model: UNet) -> str:
  return {(False, False): "Text2ImUNet", (True, False): "SuperResText2ImUNet", (False, True): "InpaintText2ImUNet",
          (True, True): "SuperResInpaintText2ImUnet"}[(bool(model.super_res), bool(model.inpaint))]


def _text_encoder(a: common.Assignment, text) -> None:
  """GLIDE's xf.Transformer and its embeddings into GlideTextEncoder (text_encoder/...)."""
  ours = "text_encoder"
  a.take(f"{ours}/token_embedding/embedding", "token_embedding.weight")  # nn.Embedding [V, W]: Flax's layout
  a.take(f"{ours}/positional_embedding", "positional_embedding")
  if text.get("padding_embedding", True):
    a.take(f"{ours}/padding_embedding", "padding_embedding")
  for i in range(text["layers"]):
    theirs = f"transformer.resblocks.{i}"
    # xf.py's QKVMultiheadAttention views c_qkv's output as (head, q|k|v, dim), as ours does.
    common.transformer_block(a, f"{ours}/transformer/block_{i}", text["heads"], f"{theirs}.ln_1",
                             f"{theirs}.attn.c_qkv", f"{theirs}.attn.c_proj", f"{theirs}.ln_2", f"{theirs}.mlp.c_fc",
                             f"{theirs}.mlp.c_proj")
  if text.get("final_ln", True):
    a.layer_norm(f"{ours}/final_ln", "final_ln")


def _clip_block(a: common.Assignment, ours: str, theirs: str, heads: int) -> None:
  """encoders.TransformerBlock: f_attn (ln, f_q, f_k without bias, f_v, f_c) and f_mlp (ln, f_1, GELU, f_2), its
  LayerNorms' params named g, b and its Affines' w, b."""
  common.transformer_block(a, ours, heads, f"{theirs}.f_attn.ln", [f"{theirs}.f_attn.f_{p}" for p in "qkv"],
                           f"{theirs}.f_attn.f_c", f"{theirs}.f_mlp.ln", f"{theirs}.f_mlp.f_1", f"{theirs}.f_mlp.f_2",
                           norm=("g", "b"), linear_names=("w", "b"), key_bias=False)
