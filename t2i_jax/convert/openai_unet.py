"""OpenAI's U-Nets into ours: improved-diffusion's and guided-diffusion's UNetModel (-> models.unet.UNet) and
guided-diffusion's EncoderUNetModel, the noisy classifier (-> models.classifier.NoisyClassifier).

    state_dict = common.read_state_dict("64x64_diffusion.pt")       # or a .safetensors of it
    params = openai_unet.unet(state_dict, config)                   # config: a whole config or its model section
    params = openai_unet.classifier(common.read_state_dict("64x64_classifier.pt"), classifier_config)

Reads the state dict that both repos save (`model.state_dict()`; float16 or float32 values, cast to our
float32): time_embed.{0,2}, label_emb, input_blocks.K.J, middle_block.{0,1,2}, output_blocks.K.J, out.*, where
block K of input_blocks / output_blocks holds a ResBlock at J = 0 and then, where present, an AttentionBlock and
an up/downsampler. Each of our params is named with the key it comes from and its layout change; the result is
checked against the shapes of the model that `config` builds, so a config that differs from the checkpoint's
architecture is refused with the first offending name and both shapes (common.Assignment).

Checked against openai/improved-diffusion 1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5 (improved_diffusion/unet.py)
and openai/guided-diffusion 22e0df8183507e13a7813f8d38d51b072ca1e67c (guided_diffusion/unet.py);
tests/convert/test_openai_unet.py compares outputs with tiny random models of both. GLIDE's U-Nets are this
UNetModel plus a text encoder and encoder_kv projections: convert/glide.py maps their trunk with `trunk`.

What the config must say, and what differs:
- attention_resolutions: theirs are downsampling factors ds, ours the feature maps' sides in pixels
  (ours = image_size // ds). Our class_null must be False: their label table has num_classes rows.
- Attention q/k/v: a 1x1 conv1d to 3·C channels. QKVAttentionLegacy (improved-diffusion's only QKVAttention,
  and guided-diffusion's unless use_new_attention_order) reads them as (head, q|k|v, dim), which is our
  layers.AttentionBlock's order; QKVAttention (use_new_attention_order=True, as the released 64x64 ImageNet
  model has it) reads (q|k|v, head, dim), so the converter regroups them, and needs the flag, which a state dict
  does not record. The classifier's AttentionPool2d always uses QKVAttention, whatever the flag.
- The number of heads is not visible in any shape: num_heads / num_head_channels must be the checkpoint's.
  Their num_heads_upsample (a different head count in the decoder, deprecated in guided-diffusion and unused by
  the released models) has no counterpart in our UNet; such a checkpoint converts but computes differently.
- improved-diffusion: its first conv is model_channels wide where guided-diffusion's and ours are
  channel_mult[0]·model_channels (the same for every runnable improved-diffusion model: with channel_mult[0] ≠ 1
  its own output conv does not fit), no resblock_updown, no num_head_channels; its ResBlocks, attention blocks
  and keys are guided-diffusion's otherwise. Its sampler feeds the model t·1000/T when rescale_timesteps (its
  default, and its released models'): --source=improved_diffusion sets our model.timestep_scale to 1000/T.
- Classifier: only pool="attention" (the released classifiers'); "adaptive" and "spatial" heads have no
  counterpart in NoisyClassifier and are refused (missing out.2.positional_embedding).
- guided-diffusion's 512x512 model and classifier (channel_mult starting at 0.5) have no counterpart: our
  modules take whole channel multipliers. Only dims=2.
- SuperResModel (x and the bilinearly upsampled low_res concatenated, in that order) is our UNet with
  super_res=True and noise_aug_embedding=False.
"""

from typing import Callable

import numpy as np

from t2i_jax.convert import common
from t2i_jax.models.classifier import NoisyClassifier
from t2i_jax.models.unet import UNet


def unet(state_dict: common.StateDict, config, *, use_new_attention_order: bool = False) -> dict:
  """Our UNet's params from an improved-diffusion or guided-diffusion UNetModel (or SuperResModel) state dict.

  Args:
    state_dict: {key: array} in PyTorch layouts (conv [O, I, kh, kw], Linear [O, I], conv1d [O, I, 1]).
    config: a config with a `model` section, or the section itself; name "unet", with the checkpoint's
      architecture (see the module docstring for what maps to what).
    use_new_attention_order: the reference model's flag of that name (guided-diffusion only).

  Returns:
    the params tree that models.build(config.model).apply takes as {"params": ...}, float32.
  """
  model = common.build(config, UNet)
  expected = common.expected_params(model)
  a = common.Assignment(state_dict, "openai UNetModel")
  trunk(a, model, common.flat(expected), _order(use_new_attention_order))
  return a.params(expected)


def classifier(state_dict: common.StateDict, config, *, use_new_attention_order: bool = False) -> dict:
  """Our NoisyClassifier's params from a guided-diffusion EncoderUNetModel (pool="attention") state dict.

  Args:
    state_dict: {key: array} in PyTorch layouts, as for `unet`.
    config: a config with a `model` section, or the section itself; name "classifier", num_classes the
      reference's out_channels.
    use_new_attention_order: the reference model's flag for its encoder's attention blocks (the pool always
      splits q/k/v first).

  Returns:
    the params tree of models.build(config.model), float32.
  """
  model = common.build(config, NoisyClassifier)
  expected = common.expected_params(model)
  a = common.Assignment(state_dict, "openai EncoderUNetModel")
  _time_embed(a)
  _encoder(a, model, common.flat(expected), _order(use_new_attention_order))
  a.group_norm("out_norm", "out.0")
  # AttentionPool2d: its table is [C, HW + 1] (channels first), ours [HW + 1, C]; its qkv_proj feeds a
  # QKVAttention, so q/k/v are split before heads.
  a.take("pool/positional_embedding", "out.2.positional_embedding", np.transpose)
  a.dense("pool/qkv", "out.2.qkv_proj", fuse=(3, _heads(model), "parts-heads"))
  a.dense("pool/c_proj", "out.2.c_proj")
  return a.params(expected)


def trunk(a: common.Assignment, model: UNet, want: dict, order: str) -> None:
  """UNetModel's params into our UNet's: time_embed, label_emb (where our model has classes), input_blocks,
  middle_block, output_blocks and out, the keys that guided-diffusion and GLIDE's models share.

  want: our model's params by "/"-joined name (common.flat of common.expected_params), which says where our
    model has an attention block, a skip conv or a text projection of the attention (encoder_kv).
  order: how the attention reads its fused q|k|v (common.heads_last's names; `_order`).
  """
  _time_embed(a)
  if model.num_classes is not None:
    a.take("label_emb/embedding", "label_emb.weight")  # nn.Embedding [N, E] is Flax's layout already
  _encoder(a, model, want, order)
  # output_blocks.K: a ResBlock at .0, then an AttentionBlock where there is attention, then the upsampler
  # that ends a level.
  k = 0
  for level in reversed(range(len(model.channel_mult))):
    for i in range(model.num_res_blocks + 1):
      _res(a, want, f"up_{level}_res_{i}", f"output_blocks.{k}.0")
      j = 1
      if f"up_{level}_attn_{i}/qkv/kernel" in want:
        _attention(a, want, model, f"up_{level}_attn_{i}", f"output_blocks.{k}.1", order)
        j = 2
      if level and i == model.num_res_blocks:
        _resample(a, want, model, f"up_{level}_upsample", f"output_blocks.{k}.{j}", conv_name="conv")
      k += 1
  a.group_norm("out_norm", "out.0")
  a.conv("out_conv", "out.2")


# --- the pieces both models share -----------------------------------------------------------------------------

def _order(use_new_attention_order: bool) -> str:
  # common.heads_last's names: QKVAttention splits q|k|v first, QKVAttentionLegacy heads first.
  return "parts-heads" if use_new_attention_order else "heads-parts"


def _heads(model) -> Callable[[int], int]:
  """heads(C): the model's head count at width C (NoisyClassifier has num_head_channels only; a UNet with
  num_head_channels = -1 has a fixed num_heads)."""
  per_head = model.num_head_channels
  return lambda channels: channels // per_head if per_head > 0 else model.num_heads


def _time_embed(a: common.Assignment) -> None:
  # nn.Sequential(Linear, SiLU, Linear): the Linears are entries 0 and 2.
  a.dense("time_embed/dense_0", "time_embed.0")
  a.dense("time_embed/dense_1", "time_embed.2")


def _res(a: common.Assignment, want: dict, ours: str, theirs: str) -> None:
  """A ResBlock: in_layers = (GroupNorm, SiLU, conv), emb_layers = (SiLU, Linear), out_layers = (GroupNorm, SiLU,
  Dropout, conv), and a 1x1 skip_connection where the width changes (ours has `skip` exactly there)."""
  a.group_norm(f"{ours}/in_norm", f"{theirs}.in_layers.0")
  a.conv(f"{ours}/in_conv", f"{theirs}.in_layers.2")
  # With use_scale_shift_norm the Linear gives [scale | shift], which our ResBlock splits in the same order.
  a.dense(f"{ours}/emb_proj", f"{theirs}.emb_layers.1")
  a.group_norm(f"{ours}/out_norm", f"{theirs}.out_layers.0")
  a.conv(f"{ours}/out_conv", f"{theirs}.out_layers.3")
  if f"{ours}/skip/kernel" in want:
    a.conv(f"{ours}/skip", f"{theirs}.skip_connection")


def _attention(a: common.Assignment, want: dict, model, ours: str, theirs: str, order: str) -> None:
  """An AttentionBlock: norm, qkv (conv1d C -> 3C, kernel [3C, C, 1]), encoder_kv where ours has it (GLIDE's:
  conv1d text width -> 2C, k|v grouped as q|k|v are), proj_out (conv1d C -> C)."""
  # Heads from the checkpoint's own width: a checkpoint of another width is then refused by the shape check,
  # naming both.
  heads = _heads(model)
  a.group_norm(f"{ours}/norm", f"{theirs}.norm")
  a.dense(f"{ours}/qkv", f"{theirs}.qkv", fuse=(3, heads, order))
  if f"{ours}/encoder_kv/kernel" in want:
    a.dense(f"{ours}/encoder_kv", f"{theirs}.encoder_kv", fuse=(2, heads, order))
  a.dense(f"{ours}/proj_out", f"{theirs}.proj_out")


def _resample(a: common.Assignment, want: dict, model, ours: str, theirs: str, conv_name: str) -> None:
  """A down/upsampler: a ResBlock (resblock_updown), a 3x3 conv (Downsample.op / Upsample.conv), or nothing."""
  if model.resblock_updown:
    _res(a, want, ours, theirs)
  elif model.conv_resample:
    a.conv(f"{ours}/Conv_0", f"{theirs}.{conv_name}")


def _encoder(a: common.Assignment, model, want: dict, order: str) -> None:
  """The input conv, downsampling path and middle block (models.unet.encoder_half's names): input_blocks.K holds
  a ResBlock at .0, then an AttentionBlock where there is attention; a downsampler is a block of its own."""
  a.conv("input_conv", "input_blocks.0.0")
  k = 1
  for level in range(len(model.channel_mult)):
    for i in range(model.num_res_blocks):
      _res(a, want, f"down_{level}_res_{i}", f"input_blocks.{k}.0")
      if f"down_{level}_attn_{i}/qkv/kernel" in want:
        _attention(a, want, model, f"down_{level}_attn_{i}", f"input_blocks.{k}.1", order)
      k += 1
    if level != len(model.channel_mult) - 1:
      _resample(a, want, model, f"down_{level}_downsample", f"input_blocks.{k}.0", conv_name="op")
      k += 1
  _res(a, want, "middle_res_0", "middle_block.0")
  _attention(a, want, model, "middle_attn", "middle_block.1", order)
  _res(a, want, "middle_res_1", "middle_block.2")
