"""Where the chain loses the caption: the decoder fed other inputs than the prior's sample and the caption,
same prompts, oracle and sampler as the chain's --mode=eval.

  --feed renders       the CLIP image embedding of a render of each prompt (the prior bypassed)
  --feed no_embedding  the caption only (the embedding zeroed, the decoder's dropped value)
  --feed no_caption    the prior's embedding only (the null caption)

  PYTHONPATH=. .venv/bin/python experiments/unclip_vs_glide/attribution.py --chain runs/unclip_vs_glide/unclip_s0 \
      --feed renders,no_embedding,no_caption [--decoder_guides both]
"""

import argparse

import jax.numpy as jnp

from configs import shapes_unclip
from t2i_jax import config_keys
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import unclip

FEEDS = ("renders", "no_embedding", "no_caption")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--chain", required=True, help="folder holding clip/, prior/, decoder/")
  parser.add_argument("--feed", default="renders", help=f"comma-separated, of {FEEDS}")
  parser.add_argument("--decoder_guides", default=None, help="override unclip.decoder_guides")
  args = parser.parse_args()
  feeds = args.feed.split(",")
  if not set(feeds) <= set(FEEDS):
    parser.error(f"--feed={args.feed}: choose from {FEEDS}")
  config = config_keys.complete(shapes_unclip.get_config())
  for name in ("clip", "prior", "decoder"):
    config.unclip[f"{name}_workdir"] = f"{args.chain}/{name}"
  config.unclip.upsampler_workdir = ""
  if args.decoder_guides:
    config.unclip.decoder_guides = args.decoder_guides
  chain = unclip.load(config.unclip, use_upsampler=False)
  base = unclip.Settings.from_config(config.unclip, chain)
  evaluation = config.eval
  scenes = evaluate.prompt_scenes(evaluation.num_single, evaluation.num_heldout, evaluation.num_pair,
                                  evaluation.seed)
  diverse = scenes[:evaluation.num_diverse]
  # A render of each prompt at the CLIP's size (another layout jitter than FID's reference set).
  renders = dict(zip(evaluate.prompts_for(scenes + diverse),
                     evaluate.reference_images(scenes + diverse, chain.clip.model.image_size, seed=7)))

  def sample_fn(setting, prompts, seed):
    settings = base.reseeded(seed)
    if setting["feed"] == "renders":
      emb = unclip.image_embeddings(chain, [renders[p] for p in prompts])
    else:
      text_emb, states, mask = unclip.encode_text(chain, prompts)
      emb = unclip.sample_prior(chain.prior, text_emb, states, mask, settings.prior, settings.candidates)
      if setting["feed"] == "no_embedding":
        emb = jnp.zeros_like(emb)
    caption = None if setting["feed"] == "no_caption" else prompts
    return {"decoder": unclip.decode(chain.decoder, emb, settings.decoder, caption, guides=settings.decoder_guides)}

  rows = evaluate.evaluate_fn(sample_fn, [dict(feed=feed, method=base.decoder.method, steps=base.decoder.steps,
                                               guidance=base.decoder.guidance) for feed in feeds], evaluation)
  print(f"decoder_guides={base.decoder_guides}")
  print(evaluate.format_table(rows, ("feed",) + evaluate.CHAIN_COLUMNS))


if __name__ == "__main__":
  main()
