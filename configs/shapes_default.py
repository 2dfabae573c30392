"""The embedded default: a GLIDE-style text-conditional U-Net on captioned shapes, trained on a CPU.

About 10 minutes of training on a 2-core CPU (experiments/shapes_default); everything is rendered
locally, nothing is downloaded. configs/shapes_full.py is the hour-long variant that binds two objects.

  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=sample
  python -m t2i_jax.main --config=configs/shapes_default.py --workdir=runs/demo --mode=eval
  python -m t2i_jax.main --config=configs/shapes_default.py:runlocal --workdir=/tmp/shapes_runlocal
"""

import ml_collections

from configs import common

PROMPTS = ("a large red circle in the top left corner", "a small blue square at the bottom",
           "a large green star in the middle", "a small yellow cross on the right",
           "a large purple triangle at the left", "a small orange circle at the top right",
           "a large blue star at the bottom left", "a small green square in the center")


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = ml_collections.ConfigDict(dict(seed=0, fsdp=1))
  # 24 px: 1.5x the images/s of 32 px for the same caption accuracy per step (experiments/shapes_default).
  config.data = common.data("shapes", 24, num_train=50_000, tokenizer="shapes", context_length=common.SHAPES_CONTEXT)
  config.model = ml_collections.ConfigDict(dict(
      name="unet", image_size=24, in_channels=3, out_channels=3, learn_sigma=True, model_channels=64,
      # 64 channels at every level: 1.4x the images/s of (1, 2, 2), and the extra steps beat the width.
      num_res_blocks=1, channel_mult=(1, 1, 1), attention_resolutions=(6, 3), num_head_channels=32,
      dropout=0.0, use_scale_shift_norm=True, resblock_updown=False, conv_resample=True,
      patch_size=2, coord_channels=True, attention_position_embedding=False,  # a 12x12 U-Net that knows where
      text=dict(vocab_size=64, context_length=common.SHAPES_CONTEXT, width=128, layers=2, heads=4, final_ln=True,
                padding_embedding=True, pool="bow", position_init_std=0.01, pool_dropout=0.0),
      dtype="float32", remat=False,
  ))
  # v-prediction keeps the weight of the high-noise steps that decide colour, shape and layout; timesteps
  # logit-normal with s = 0.6 train the middle levels where the shape is drawn (uniform t: a quarter of
  # the shapes right after 10 minutes); 20% of captions dropped (GLIDE's) for guidance.
  config.diffusion = common.diffusion(mean_type="v", p_uncond=0.2, timestep_sampler="logit-normal",
                                      logit_mean=0.0, logit_std=0.6)
  # Constant 1e-3: 2e-3 and a cosine decay both drew fewer shapes right in 10 minutes.
  config.optim = common.optim(1e-3, warmup_steps=100, b2=0.99)
  # Batch 16 learns more per image seen than 32 at the same images/s; 4,400 steps fill 10 minutes.
  config.train = common.train(16, 4400, log_every=100, checkpoint_every=800, ema_rate=0.999, ema_warmup=True,
                              sample_every=1600)
  # The EMA is ahead of the raw params, which swing between checkpoints at a constant rate. The samplers
  # stop at t = 150: the narrow timestep density leaves t < 150 untrained, where the model adds noise.
  config.sample = common.sample(method="dpm++2m", steps=20, guidance=3.0, use_ema=True, min_timestep=150,
                                prompts=PROMPTS)
  # --mode=eval (make demo ends with it): the first setting is the headline of metrics.json.
  config.eval = common.evaluation(settings=("dpm++2m:20:3", "dpm++2m:20:1"))
  if "runlocal" in flags:
    runlocal(config)
  return config


def runlocal(config) -> None:
  """The same recipe at a size that trains two steps on a CPU in seconds (shapes rendered on the fly)."""
  config.data.update(dict(name="shapes_rendered", image_size=16, num_train=64))
  config.model.update(dict(image_size=16, model_channels=32, channel_mult=(1,), attention_resolutions=(8,),
                           num_head_channels=16))
  config.model.text.update(dict(width=32, layers=1, heads=2))
  config.diffusion.num_timesteps = 100
  config.train.update(dict(batch_size=8, num_steps=2, log_every=1, checkpoint_every=2, sample_every=2))
  config.optim.warmup_steps = 1
  config.sample.update(dict(steps=5, min_timestep=15, prompts=config.sample.prompts[:2]))
  config.eval.update(dict(num_single=4, num_heldout=2, num_pair=2, batch_size=8, settings=("ddim:3:3",),
                          num_diverse=2, diverse_samples=2))
