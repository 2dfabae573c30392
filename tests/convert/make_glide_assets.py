"""Makes the GLIDE parity assets of tests/convert/test_glide.py from openai/glide-text2im's own code.

Reference: github.com/openai/glide-text2im at commit 69b530740eb6cef69442d6180579ef5ba9ef063e (2022-03-21),
extracted outside this repository and put on the path; its code is never copied here. Made with torch
2.13.0+cpu, numpy 2.4.6, attrs 26.1.0:

  mkdir -p /tmp/ref/glide && git --git-dir=<a clone of openai/glide-text2im>/.git archive \
      69b530740eb6cef69442d6180579ef5ba9ef063e | tar -x -C /tmp/ref/glide
  /tmp/torchenv/bin/python tests/convert/make_glide_assets.py --ref=/tmp/ref/glide

Each model is TINY and built by the reference classes themselves (Text2ImUNet, SuperResText2ImUNet,
InpaintText2ImUNet, clip.encoders.ImageEncoder / TextEncoder) with GLIDE's options (scale-shift norm,
residual up/down-sampling, a learned padding embedding, a final LayerNorm, learned sigma), seeded with
torch.manual_seed(SEED). Every param is then redrawn (normal, std 1/sqrt(fan-in) for weights, 0.2 for
biases, 1 + 0.2·N for norm gains; zero-initialised ones included, else parity through them would hold for
any mapping) and rounded to float16, so that the state dicts are stored as float16 at half the size while
the reference outputs are those of exactly the stored values (computed in float32).

Files in tests/convert/assets/:
  glide_<name>.safetensors: the model's state dict, keys as the reference names them (float16).
  glide_<name>_io.npz: the inputs and the reference output, images NHWC (the reference's NCHW transposed):
    U-Nets: x [2, H, W, 3], t [2], tokens [2, 8], mask [2, 8] (bool), low_res [2, H/4, W/4, 3] (upsampler),
      inpaint_image [2, H, W, 3] and inpaint_mask [2, H, W, 1] (inpainting), out [2, H, W, 6].
  glide_clip_image_enc.safetensors, glide_clip_text_enc.safetensors: the noised CLIP's two towers, as GLIDE
    publishes them (clip_image_enc.pt, clip_text_enc.pt); glide_clip_io.npz: x [2, 16, 16, 3] in [-1, 1],
    t [2], image_emb [2, 16] = ImageEncoder((x + 1)·127.5, t) (CLIPModel.image_embeddings before its
    normalisation), tokens [2, 8], text_len [2], text_emb [2, 16] = TextEncoder(tokens, text_len).

numpy >= 1.24 has no np.bool, which the reference's clip/attention.py uses; this script aliases it to bool
before importing it.
"""

import argparse
import os
import sys
import types

import numpy as np
import torch

SEED = 0
HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "assets")
TEXT = dict(text_ctx=8, xf_width=32, xf_heads=2, xf_final_ln=True, xf_padding=True)
VOCAB = 64
# Each U-Net: (class name, image size, xf_layers, channel_mult, attention_resolutions as downsample rates).
# The base covers two levels (residual down/up-sampling, skip convs, attention at both); the others share
# its trunk code and differ in their input, so one level keeps their files small.
UNETS = {
    "base": ("Text2ImUNet", 8, 2, (1, 1), (1, 2)),
    "upsample": ("SuperResText2ImUNet", 16, 1, (1,), (1,)),
    "inpaint": ("InpaintText2ImUNet", 8, 1, (1,), (1,)),
}
# The noised CLIP: 16 px images in 4 px patches, 2 heads of 16 channels, 2 blocks per tower, 50 timesteps.
CLIP = dict(image_size=16, patch_size=4, n_embd=16, n_head=2, n_head_state=16, n_xf_blocks=2, n_timestep=50,
            n_vocab=VOCAB, max_text_len=8)


def randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
  """Redraws every param (see the module docstring), rounded to float16 values."""
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim == 1:
        # LayerNorm and GroupNorm gains start at one (GroupNorm's `weight`, the CLIP LayerNorm's `g`).
        is_gain = bool((p == 1).all()) and (name.endswith(".weight") or name.endswith(".g"))
        value = 1 + 0.2 * noise if is_gain else 0.2 * noise
      else:
        value = noise / np.sqrt(p.numel() // p.shape[0])
      p.copy_(value.half().float())


def save(name: str, state_dict, io: dict) -> None:
  from safetensors.numpy import save_file
  tensors = {k: v.detach().numpy().astype(np.float16) for k, v in state_dict.items()}
  save_file(tensors, os.path.join(ASSETS, f"glide_{name}.safetensors"))
  if io is not None:
    np.savez(os.path.join(ASSETS, f"glide_{name}_io.npz"), **io)


def nhwc(x: torch.Tensor) -> np.ndarray:
  return x.detach().permute(0, 2, 3, 1).numpy().astype(np.float32)


def make_unet(name: str, gen: torch.Generator) -> None:
  from glide_text2im import text2im_model
  cls_name, size, layers, channel_mult, attention_ds = UNETS[name]
  model = getattr(text2im_model, cls_name)(
      **TEXT, xf_layers=layers, tokenizer=types.SimpleNamespace(n_vocab=VOCAB), in_channels=3, model_channels=32,
      out_channels=6, num_res_blocks=1, attention_resolutions=attention_ds, dropout=0.1, channel_mult=channel_mult,
      use_fp16=False, num_heads=1, num_head_channels=16, num_heads_upsample=-1, use_scale_shift_norm=True,
      resblock_updown=True)
  model.eval()
  randomize(model, gen)
  x = torch.randn((2, 3, size, size), generator=gen)
  t = torch.tensor([3, 871])
  tokens = torch.randint(1, VOCAB, (2, TEXT["text_ctx"]), generator=gen)
  # Captions of 5 and 3 tokens; the rest is padding, which takes the padding embedding.
  mask = torch.arange(TEXT["text_ctx"])[None] < torch.tensor([[5], [3]])
  kwargs = dict(tokens=tokens, mask=mask)
  io = dict(x=nhwc(x), t=t.numpy().astype(np.int32), tokens=tokens.numpy().astype(np.int32), mask=mask.numpy())
  if name == "upsample":
    low_res = torch.randn((2, 3, size // 4, size // 4), generator=gen)
    kwargs["low_res"] = low_res
    io["low_res"] = nhwc(low_res)
  if name == "inpaint":
    image = torch.randn((2, 3, size, size), generator=gen)
    inpaint_mask = (torch.rand((2, 1, size, size), generator=gen) < 0.5).float()
    kwargs.update(inpaint_image=image, inpaint_mask=inpaint_mask)
    io.update(inpaint_image=nhwc(image), inpaint_mask=nhwc(inpaint_mask))
  with torch.no_grad():
    io["out"] = nhwc(model(x, t, **kwargs))
  save(name, model.state_dict(), io)
  print(name, cls_name, sum(p.numel() for p in model.parameters()), "params, |out| max", np.abs(io["out"]).max())


def make_clip(gen: torch.Generator) -> None:
  from glide_text2im.clip.encoders import ImageEncoder, TextEncoder
  cpu = torch.device("cpu")
  image_enc = ImageEncoder(image_size=CLIP["image_size"], patch_size=CLIP["patch_size"], n_embd=CLIP["n_embd"],
                           n_head=CLIP["n_head"], n_xf_blocks=CLIP["n_xf_blocks"], n_head_state=CLIP["n_head_state"],
                           n_timestep=CLIP["n_timestep"], device=cpu)
  text_enc = TextEncoder(n_bpe_vocab=CLIP["n_vocab"], max_text_len=CLIP["max_text_len"], n_embd=CLIP["n_embd"],
                         n_head=CLIP["n_head"], n_xf_blocks=CLIP["n_xf_blocks"], n_head_state=CLIP["n_head_state"],
                         device=cpu)
  randomize(image_enc, gen)
  randomize(text_enc, gen)
  size = CLIP["image_size"]
  x = torch.rand((2, 3, size, size), generator=gen) * 2 - 1
  t = torch.tensor([7, 42])
  tokens = torch.randint(1, CLIP["n_vocab"], (2, CLIP["max_text_len"]), generator=gen)
  text_len = torch.tensor([5, 8])
  with torch.no_grad():
    image_emb = image_enc((x + 1) * 127.5, t)  # as CLIPModel.image_embeddings feeds it
    text_emb = text_enc(tokens, text_len)
  save("clip_image_enc", image_enc.state_dict(), None)
  save("clip_text_enc", text_enc.state_dict(), None)
  np.savez(os.path.join(ASSETS, "glide_clip_io.npz"), x=nhwc(x), t=t.numpy().astype(np.int32),
           image_emb=image_emb.numpy(), tokens=tokens.numpy().astype(np.int32),
           text_len=text_len.numpy().astype(np.int32), text_emb=text_emb.numpy())
  print("clip", sum(p.numel() for p in image_enc.parameters()) + sum(p.numel() for p in text_enc.parameters()),
        "params")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="the extracted openai/glide-text2im source tree")
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.ref))
  if not hasattr(np, "bool"):
    np.bool = bool  # the reference's clip/attention.py predates numpy 1.24
  os.makedirs(ASSETS, exist_ok=True)
  torch.manual_seed(SEED)
  gen = torch.Generator().manual_seed(SEED)
  for name in UNETS:
    make_unet(name, gen)
  make_clip(gen)


if __name__ == "__main__":
  main()
