"""ADM, class-conditional ImageNet 64×64 (Dhariwal & Nichol, 2021), and its noisy classifier.

U-Net 295,904,454 parameters (batch 2048, Adam 3e-4, EMA 0.9999, 540k steps);
classifier 65,438,568 (batch 256, AdamW 3e-4 with weight decay 0.05, 300k
steps), as guided-diffusion's 64×64 models and its Table 11.

  python -m t2i_jax.main --config=configs/adm_imagenet64.py --workdir=runs/adm64
  python -m t2i_jax.main --config=configs/adm_imagenet64.py:classifier --workdir=runs/adm64_classifier
  python -m t2i_jax.main --config=configs/adm_imagenet64.py:runlocal --workdir=/tmp/adm64
  python -m t2i_jax.main --config=configs/adm_imagenet64.py:classifier,runlocal --workdir=/tmp/adm64_classifier
"""

import ml_collections

from configs import common


def get_config(arg=None):
  flags = common.parse_arg(arg, allowed=("runlocal", "classifier"))
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.fsdp = 1
  config.diffusion = common.diffusion()
  config.data = common.data("imagenet_resized/64x64", 64)
  # Classifier guidance (guided diffusion): point classifier_workdir at a trained `:classifier` run.
  config.sample = common.sample(method="ddim", steps=25, num_images=16, classifier_workdir="",
                                classifier_scale=1.0)
  if "classifier" in flags:
    config.model = ml_collections.ConfigDict(dict(
        name="classifier", image_size=64, in_channels=3, num_classes=1000, model_channels=128, num_res_blocks=4,
        channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8), num_head_channels=64, dropout=0.0,
        use_scale_shift_norm=True, resblock_updown=True, dtype="float32", remat=False,
    ))
    config.optim = common.optim(3e-4, weight_decay=0.05, grad_clip=0.0)
    config.train = common.train(256, 300_000)
  else:
    config.model = ml_collections.ConfigDict(dict(
        name="unet", image_size=64, in_channels=3, out_channels=3, learn_sigma=True, model_channels=192,
        num_res_blocks=3, channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8), num_head_channels=64,
        dropout=0.1, use_scale_shift_norm=True, resblock_updown=True, num_classes=1000, class_null=False,
        dtype="float32", remat=False,
    ))
    config.optim = common.optim(3e-4, grad_clip=0.0)
    config.train = common.train(2048, 540_000)
  if "runlocal" in flags:
    common.shrink_for_cpu(config)
    config.model.num_classes = 10
  return config
