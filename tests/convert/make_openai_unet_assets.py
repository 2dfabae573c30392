"""Makes tests/convert/assets/openai_*: tiny random reference models of OpenAI's U-Nets and their outputs.

For each model below: the reference module is built from the reference repo's own code, every param is
drawn at random with a fixed seed (the zero-initialised output convs included, so that parity is not trivially
true) and rounded to float16 values, the model runs in float32 on fixed inputs, and the script saves

  assets/<name>.safetensors   the state dict, float16 (exactly the values the reference ran with; it keeps the
                              assets small and makes the converter cast to float32 as for an fp16 checkpoint)
  assets/<name>_io.npz        x [B, H, W, C] (NHWC, transposed from the reference's NCHW), t [B] int32,
                              y [B] int32 where class-conditional, out: the reference's output, NHWC for a
                              U-Net ([B, H, W, C_out]), logits [B, K] for the classifier.

Reference code: openai/improved-diffusion at 1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5 and openai/guided-diffusion
at 22e0df8183507e13a7813f8d38d51b072ca1e67c, extracted (never copied into this repo) with

  git --git-dir=<mirror of improved-diffusion> archive 1bc7bbbd | tar -x -C /tmp/ref/improved-diffusion
  git --git-dir=<mirror of guided-diffusion> archive 22e0df81 | tar -x -C /tmp/ref/guided-diffusion

and the assets made with torch 2.13.0+cpu, numpy 2.4.6, safetensors, on CPU:

  python tests/convert/make_openai_unet_assets.py --improved=/tmp/ref/improved-diffusion \\
      --guided=/tmp/ref/guided-diffusion

Their unet.py needs nothing beyond torch and numpy (guided_diffusion/logger.py is standard library only).
"""

import argparse
import os
import sys

import numpy as np

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
SEED = 20240601
BATCH = 2

# name: (repo, class, kwargs). attention_resolutions are the references' downsampling factors.
MODELS = {
    # improved-diffusion as its CIFAR-10 class-conditional model, shrunk: learned sigma (6 output channels),
    # additive timestep embedding (use_scale_shift_norm=False; the other ResBlock path is the next model's).
    "openai_iddpm_unet": ("improved", "UNetModel", dict(
        in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(2,),
        channel_mult=(1, 1), num_classes=3, num_heads=2, use_scale_shift_norm=False)),
    # guided-diffusion as ADM ImageNet-64, shrunk: ResBlock up/down, scale-shift norm, 16-channel heads,
    # attention at 8 and 4 pixels, class-conditional, learned sigma.
    "openai_adm_unet": ("guided", "UNetModel", dict(
        image_size=8, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
        attention_resolutions=(1, 2), channel_mult=(1, 1), num_classes=3, num_head_channels=16,
        use_scale_shift_norm=True, resblock_updown=True)),
    # QKVAttention (q|k|v split before heads), 4 heads of 8, conv up/downsampling, unconditional.
    "openai_adm_unet_new_order": ("guided", "UNetModel", dict(
        image_size=8, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
        attention_resolutions=(2,), channel_mult=(1, 1), num_head_channels=8, use_scale_shift_norm=True,
        use_new_attention_order=True)),
    # The noisy classifier as guided-diffusion's create_classifier builds it, shrunk: attention pooling (4 heads).
    "openai_adm_classifier": ("guided", "EncoderUNetModel", dict(
        image_size=8, in_channels=3, model_channels=32, out_channels=5, num_res_blocks=1,
        attention_resolutions=(1, 2), channel_mult=(1, 1), num_head_channels=8, use_scale_shift_norm=True,
        resblock_updown=True, pool="attention")),
}


def randomise(model, torch, generator):
  """Draws every param: conv/linear weights N(0, 1/fan_in), biases N(0, 0.2²), GroupNorm scales 1 + N(0, 0.2²),
  embeddings N(0, 1), the pool's positional table N(0, 1/C); then rounds them to float16 values."""
  drawn = set()

  def normal(p, std, mean=0.0):
    p.copy_(mean + std * torch.randn(p.shape, generator=generator))
    drawn.add(id(p))

  with torch.no_grad():
    for module in model.modules():
      own = dict(module.named_parameters(recurse=False))
      if isinstance(module, torch.nn.GroupNorm):
        normal(own["weight"], 0.2, mean=1.0)
        normal(own["bias"], 0.2)
      elif isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
        normal(own["weight"], own["weight"][0].numel() ** -0.5)
        normal(own["bias"], 0.2)
      elif isinstance(module, torch.nn.Embedding):
        normal(own["weight"], 1.0)
      elif "positional_embedding" in own:
        normal(own["positional_embedding"], own["positional_embedding"].shape[0] ** -0.5)
    missed = [name for name, p in model.named_parameters() if id(p) not in drawn]
    if missed:
      raise RuntimeError(f"params left at their initial values: {missed}")
    for p in model.parameters():
      p.copy_(p.half().float())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--improved", required=True, help="extracted openai/improved-diffusion")
  parser.add_argument("--guided", required=True, help="extracted openai/guided-diffusion")
  args = parser.parse_args()
  sys.path[:0] = [args.improved, args.guided]
  import torch
  from guided_diffusion import unet as guided
  from improved_diffusion import unet as improved
  from safetensors.numpy import save_file

  torch.set_num_threads(1)
  os.makedirs(ASSETS, exist_ok=True)
  for index, (name, (repo, cls, kwargs)) in enumerate(MODELS.items()):
    generator = torch.Generator().manual_seed(SEED + index)
    model = getattr(guided if repo == "guided" else improved, cls)(**kwargs).eval()
    randomise(model, torch, generator)
    size = kwargs.get("image_size", 8)
    x = torch.randn((BATCH, kwargs["in_channels"], size, size), generator=generator)
    t = torch.tensor([3, 917])
    io = dict(x=x.permute(0, 2, 3, 1).numpy(), t=t.numpy().astype(np.int32))
    call = dict()
    if kwargs.get("num_classes") is not None:
      call["y"] = torch.tensor([0, 2])
      io["y"] = call["y"].numpy().astype(np.int32)
    with torch.no_grad():
      out = model(x, t, **call)
    io["out"] = (out.permute(0, 2, 3, 1) if out.ndim == 4 else out).numpy()
    state = {k: v.half().numpy() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(ASSETS, f"{name}.safetensors"))
    np.savez(os.path.join(ASSETS, f"{name}_io.npz"), **io)
    print(f"{name}: {sum(v.size for v in state.values())} params, out {tuple(io['out'].shape)} "
          f"|out| max {np.abs(io['out']).max():.3f}")


if __name__ == "__main__":
  main()
