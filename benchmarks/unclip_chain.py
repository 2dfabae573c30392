"""Seconds per image of the unCLIP chain, stage by stage, at the chain config's sampler settings.

Loads the four trained stages of a chain config (configs/shapes_unclip.py, workdirs overridable),
compiles once, then times `repeats` runs of each stage on a batch of prompts: the CLIP text encoder,
the prior (K candidates each, re-ranked), the decoder and the upsampler, each waited on with
block_until_ready; medians.

  PYTHONPATH=. .venv/bin/python benchmarks/unclip_chain.py --root runs/unclip_vs_glide/unclip_s0 \
      [--batch 100] [--repeats 5]

Measured on the 2-core CPU development machine with the seed-0 chain of experiments/unclip_vs_glide
(commit a51a3b6), batch 100, 3 repeats, 2026-12-06, while another benchmark shared the machine: the
absolute times are high, the stages' shares are the figure (the decoder 57%, the prior 21%):

| stage | ms per image |
|---|---|
| CLIP text | 0.13 |
| prior (DDIM 25 steps × K = 2 candidates, 4 × 128 transformer) | 28.6 |
| decoder (DPM++ 20 steps, guidance 3: 40 U-Net passes at 16 px) | 78.2 |
| upsampler (DPM++ 10 steps, 16 → 32 px) | 31.1 |
| whole chain | 138.1 |

Alone on the machine that day, --mode=eval timed the whole chain at 194 ms per image and the GLIDE-style
default (24 px, DPM++ 20, guidance 3) at 208 (sampling only, batch 100; eval_table.md of each run).
"""

import argparse

from benchmarks.timing import median_seconds
from configs import shapes_unclip
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import text_to_image, unclip


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="runs/unclip", help="folder holding clip/, prior/, decoder/, upsampler/")
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  config = shapes_unclip.get_config()
  for name in ("clip", "prior", "decoder", "upsampler"):
    config.unclip[f"{name}_workdir"] = f"{args.root}/{name}"
  chain = unclip.load(config.unclip)
  settings = unclip.Settings.from_config(config.unclip, chain)
  prompts = evaluate.prompts_for(evaluate.prompt_scenes(args.batch, 0, 0))
  text_emb, states, mask = unclip.encode_text(chain, prompts)
  clip_emb = unclip.sample_prior(chain.prior, text_emb, states, mask, settings.prior, settings.candidates)
  low = unclip.decode(chain.decoder, clip_emb, settings.decoder, prompts)
  stages = {
      "CLIP text": lambda: unclip.encode_text(chain, prompts),
      f"prior ({settings.prior.method} {settings.prior.steps} × K={settings.candidates})":
          lambda: unclip.sample_prior(chain.prior, text_emb, states, mask, settings.prior, settings.candidates),
      f"decoder ({settings.decoder.method} {settings.decoder.steps}, w={settings.decoder.guidance:g})":
          lambda: unclip.decode(chain.decoder, clip_emb, settings.decoder, prompts),
      f"upsampler ({settings.upsampler.method} {settings.upsampler.steps})":
          lambda: text_to_image.super_resolve(chain.upsampler, low, settings.upsampler),
  }
  total = 0.0
  print(f"| stage | ms per image (batch {args.batch}) |\n|---|---|")
  for name, fn in stages.items():
    seconds = median_seconds(fn, args.repeats, warmup=1) / args.batch
    total += seconds
    print(f"| {name} | {1000 * seconds:.2f} |")
  print(f"| whole chain | {1000 * total:.2f} |")


if __name__ == "__main__":
  main()
