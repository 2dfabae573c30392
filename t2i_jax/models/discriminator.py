"""VQGAN's adversary (Esser et al., 2021): a PatchGAN discriminator over images, trained beside the autoencoder.

The design is pix2pix's (Isola et al., 2017) as taming-transformers builds it (NLayerDiscriminator); the
first-stage models (models/autoencoder.py) hold one as a submodule when model.disc_layers > 0, and
train/autoencoder_loss.py trains it with the hinge loss.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from t2i_jax.models import layers

Dtype = Any


class PatchDiscriminator(nn.Module):
  """pix2pix's PatchGAN as taming-transformers' NLayerDiscriminator: image [B, H, W, in_channels] -> float32
  logits [B, H', W', 1], one per overlapping patch (real > 0, reconstructed < 0 under the hinge loss).

  4×4 convs, padding 1: a stride-2 conv to `channels` and LeakyReLU(0.2) without a norm; num_layers - 1
  stride-2 convs to channels·min(2^n, 8) (n = 1 … num_layers - 1); a stride-1 conv to channels·min(2^L, 8)
  (L = num_layers); each of these followed by a norm and LeakyReLU(0.2); then a stride-1 conv to one logit.
  A side S becomes S / 2^L - 2 (`output_side`), and each logit sees a patch of `receptive_field` pixels
  a side: 70 for num_layers = 3, pix2pix's "70×70 PatchGAN", which gives 30×30 logits for 256 px.

  The norm is GroupNorm (32 groups, float32; no bias in the convs before it, as taming), not taming's BatchNorm:
  this trainer keeps no batch statistics. Its statistics span each image, as training-mode BatchNorm's span the
  batch, so a logit is not a function of its patch alone; the conv stack's reach is still the receptive field.
  """

  channels: int = 64
  num_layers: int = 3
  dtype: Dtype = jnp.float32

  @staticmethod
  def output_side(side: int, num_layers: int) -> int:
    """H' of an input side H: each stride-2 conv halves it (rounding down), each stride-1 conv takes one off."""
    for _ in range(num_layers):
      side //= 2
    return side - 2

  @staticmethod
  def receptive_field(num_layers: int) -> int:
    """The side in pixels of the patch each logit sees (taken back through the convs from the last)."""
    field = 1
    for stride in [1, 1] + [2] * num_layers:
      field = (field - 1) * stride + 4
    return field

  @nn.compact
  def __call__(self, x):
    conv = lambda features, stride, bias, name: nn.Conv(  # noqa: E731
        features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)), use_bias=bias, dtype=self.dtype,
        name=name)
    h = nn.leaky_relu(conv(self.channels, 2, True, "conv_0")(x.astype(self.dtype)), 0.2)
    for n in range(1, self.num_layers + 1):
      stride = 2 if n < self.num_layers else 1
      h = conv(self.channels * min(2**n, 8), stride, False, f"conv_{n}")(h)
      h = nn.leaky_relu(layers.GroupNorm32(self.dtype, name=f"norm_{n}")(h), 0.2)
    return conv(1, 1, True, "conv_out")(h).astype(jnp.float32)
