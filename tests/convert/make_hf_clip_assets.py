"""Makes the assets of tests/convert/test_hf_clip.py: a tiny random Hugging Face CLIPModel and its outputs.

Made with transformers 5.25.0, torch 2.13.0+cpu, safetensors 0.8.0 and numpy 2.4.6 on CPU, in a venv of
its own (the test needs none of them but safetensors and numpy), from the repository root:

  python -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch==2.13.0 transformers==5.25.0 safetensors==0.8.0 numpy==2.4.6
  /tmp/torchenv/bin/python tests/convert/make_hf_clip_assets.py

A rerun writes byte-identical files (seed 0; 268 KB in all).

It writes, under tests/convert/assets/:
  hf_clip_config.json    the model's config.json as `save_pretrained` writes it
  hf_clip.safetensors    its model.safetensors as `save_pretrained` writes it
  hf_clip.bin            torch.save(model.state_dict()): the layout of a pytorch_model.bin (transformers 5 no
                         longer writes .bin files; older versions wrote this same pickled state dict)
  hf_clip_io.npz         fixed inputs and the model's outputs in float32:
                           pixel_values [2, 3, 16, 16] (NCHW, as HF takes them; already normalised),
                           input_ids int64 [3, 8], attention_mask int64 [3, 8] (padded with the
                           end-of-text id, as OpenAI's tokenizer on the hub pads),
                           image_features [2, 16], text_features [3, 16] (get_image_features /
                           get_text_features: projected, unnormalised),
                           text_states [3, 8, 24] (text_model's last_hidden_state, after its final layer norm),
                           logits_per_image [2, 3]

The model: vision tower width 16, 2 layers, 2 heads (head dim 8), 16 px images in 8 px patches; text tower
width 24, 2 layers, 3 heads (head dim 8), vocabulary 100 (start 98, end and pad 99: the end-of-text id is
the largest, as in OpenAI's vocabulary), 8 positions; projection 16; quick_gelu. The towers differ in width
and head count so that a converter that mixes them up fails on shapes, and with 2 and 3 heads a wrong
per-head order changes the numbers. Every parameter, biases and layer-norm affines included, is redrawn
from N(0, 1) scaled to its fan-in (transformers initialises biases to zero and layer norms to the
identity, which would hide a bias or layer-norm mapped to the wrong place).
"""

import json
import os
import shutil
import tempfile

import numpy as np
import safetensors
import torch
import transformers
from safetensors.numpy import load_file

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def tiny_config() -> transformers.CLIPConfig:
  text = dict(vocab_size=100, hidden_size=24, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
              max_position_embeddings=8, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=98,
              eos_token_id=99, pad_token_id=99)
  vision = dict(hidden_size=16, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_channels=3,
                image_size=16, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5)
  return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def randomise(model: torch.nn.Module) -> None:
  """Every parameter redrawn: weights N(0, 1/fan_in), biases N(0, 0.1²), layer-norm scales 1 + N(0, 0.1²)."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name == "logit_scale":
        p.fill_(2.3)  # exp = 9.97: logits of a few units, so that an error in them shows
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1 + 0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
      elif p.ndim == 1:  # class embedding
        p.copy_(torch.randn_like(p) * p.shape[0] ** -0.5)
      elif "embedding" in name and p.ndim == 2:  # token and position tables
        p.copy_(0.5 * torch.randn_like(p))
      else:
        fan_in = p[0].numel()
        p.copy_(torch.randn_like(p) * fan_in ** -0.5)


def main():
  torch.manual_seed(0)
  os.makedirs(ASSETS, exist_ok=True)
  model = transformers.CLIPModel(tiny_config()).eval()
  randomise(model)

  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "model.safetensors"), os.path.join(ASSETS, "hf_clip.safetensors"))
    shutil.copy(os.path.join(tmp, "config.json"), os.path.join(ASSETS, "hf_clip_config.json"))
  torch.save(model.state_dict(), os.path.join(ASSETS, "hf_clip.bin"))

  pixel_values = torch.randn(2, 3, 16, 16)
  input_ids = torch.tensor([[98, 5, 17, 99, 99, 99, 99, 99],
                            [98, 40, 3, 60, 71, 12, 99, 99],
                            [98, 1, 2, 3, 4, 5, 6, 99]])
  attention_mask = (torch.cumsum((input_ids == 99).long(), dim=1) - (input_ids == 99).long() == 0).long()
  with torch.no_grad():
    out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    image_features = model.get_image_features(pixel_values=pixel_values).pooler_output
    text_out = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
  text_features = text_out.pooler_output
  text_states = text_out.last_hidden_state
  np.savez_compressed(
      os.path.join(ASSETS, "hf_clip_io.npz"), pixel_values=pixel_values.numpy(), input_ids=input_ids.numpy(),
      attention_mask=attention_mask.numpy(), image_features=image_features.numpy(),
      text_features=text_features.numpy(), text_states=text_states.numpy(),
      logits_per_image=out.logits_per_image.numpy())

  # The two files hold the same tensors, and the forward's normalised embeddings are the features'.
  saved = load_file(os.path.join(ASSETS, "hf_clip.safetensors"))
  pickled = torch.load(os.path.join(ASSETS, "hf_clip.bin"), map_location="cpu", weights_only=True)
  assert sorted(saved) == sorted(pickled), (sorted(set(saved) ^ set(pickled)))
  assert all(np.array_equal(saved[k], pickled[k].numpy()) for k in saved)
  torch.testing.assert_close(out.image_embeds, image_features / image_features.norm(dim=-1, keepdim=True))
  torch.testing.assert_close(out.text_embeds, text_features / text_features.norm(dim=-1, keepdim=True))
  print(f"transformers {transformers.__version__}, torch {torch.__version__}, safetensors "
        f"{safetensors.__version__}, numpy {np.__version__}")
  print(f"{len(saved)} tensors, {sum(v.size for v in saved.values()):,} values")
  for name in sorted(os.listdir(ASSETS)):
    if name.startswith("hf_clip"):
      print(f"  {name}: {os.path.getsize(os.path.join(ASSETS, name)):,} bytes")
  print("config:", json.dumps({k: v for k, v in model.config.to_dict().items() if k == "projection_dim"}))


if __name__ == "__main__":
  main()
