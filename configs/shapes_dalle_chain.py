"""DALL·E 1 on captioned shapes as one program: caption → transformer → VQ decoder, CLIP re-ranking.

It trains nothing: it names the tokenizer's and the transformer's workdirs (configs/shapes_dalle.py has the
training commands) and, for re-ranking, a CLIP (configs/shapes_clip.py). With candidates = K, K samples of
each prompt are drawn and the CLIP keeps the best (the paper drew 512 and kept 32).

  python -m t2i_jax.main --config=configs/shapes_dalle_chain.py --workdir=runs/dalle --mode=sample \
      --prompt="a small red circle left of a large blue square"
  python -m t2i_jax.main --config=configs/shapes_dalle_chain.py --workdir=runs/dalle --mode=eval
"""

import ml_collections

from configs import common, shapes_default


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0))
  config.dalle = common.section("dalle", tokenizer_workdir="runs/dalle/dvae",
                                transformer_workdir="runs/dalle/transformer", clip_workdir="runs/dalle/clip",
                                candidates=4, prompts=shapes_default.PROMPTS[:4], num_images=4)
  # Re-ranked (the chain's 4 candidates) and not: the paper's claim, measured on the same prompts.
  config.eval = common.evaluation(settings=("", "candidates=1"))
  if "runlocal" in flags:
    config.dalle.update(dict(tokenizer_workdir="/tmp/shapes_dvae", transformer_workdir="/tmp/shapes_dalle",
                             clip_workdir="/tmp/shapes_clip", candidates=2, num_images=2))
    config.eval.update(dict(num_single=4, num_heldout=2, num_pair=2, batch_size=2, num_diverse=2,
                            diverse_samples=2))
  return config
