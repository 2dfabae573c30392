"""Where the chain loses the caption: the decoder fed the CLIP image embedding of a render of each
prompt (the prior bypassed) against the decoder fed the prior's sample, same prompts, oracle, sampler.

  .venv/bin/python experiments/unclip_vs_glide/attribution.py --chain runs/unclip_vs_glide/unclip_s0
"""

import argparse
import dataclasses

from configs import shapes_unclip
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import unclip
from t2i_jax.train import config_keys


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--chain", required=True, help="folder holding clip/, prior/, decoder/, upsampler/")
  args = parser.parse_args()
  config = config_keys.complete(shapes_unclip.get_config())
  for name in ("clip", "prior", "decoder", "upsampler"):
    config.unclip[f"{name}_workdir"] = f"{args.chain}/{name}"
  config.unclip.upsampler_workdir = ""
  chain = unclip.load_chain(config.unclip, use_upsampler=False)
  base = unclip.ChainSettings.from_config(config.unclip, chain)
  evaluation = config.eval
  scenes = evaluate.prompt_scenes(evaluation.num_single, evaluation.num_heldout, evaluation.num_pair,
                                  evaluation.seed)
  diverse = scenes[:evaluation.num_diverse]
  # A render of each prompt at the CLIP's size (another layout jitter than FID's reference set).
  renders = dict(zip(evaluate.prompts_for(scenes + diverse),
                     evaluate.reference_images(scenes + diverse, chain.clip.model.image_size, seed=7)))

  def from_renders(setting, prompts, seed):
    emb = unclip.image_embeddings(chain, [renders[p] for p in prompts])
    return {"decoder": unclip.decode(chain.decoder, emb, dataclasses.replace(base.decoder, seed=seed), prompts)}

  rows = evaluate.evaluate_fn(from_renders, [dict(method=base.decoder.method, steps=base.decoder.steps,
                                                   guidance=base.decoder.guidance)], evaluation)
  print(evaluate.format_table(rows, evaluate.CHAIN_COLUMNS))


if __name__ == "__main__":
  main()
