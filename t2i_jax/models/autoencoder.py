"""The first stage of latent diffusion (Rombach et al., 2022): a KL- or VQ-regularised autoencoder.

An image x [B, H, W, in_channels] in [-1, 1] maps to a latent [B, H/f, W/f, embed_dim], f = 2^(len(ch_mult) - 1),
on which the diffusion model is trained; the decoder maps latents back to images.
- Encoder: conv_in → per level, num_res_blocks ResnetBlocks (each followed by an AttnBlock where the feature
  map's side is in attn_resolutions) and a stride-2 Downsample except at the last level → middle (ResnetBlock,
  AttnBlock, ResnetBlock) → GroupNorm → SiLU → conv_out: [B, H/f, W/f, (2 if double_z else 1)·z_channels].
- Decoder: the mirror, [B, h, w, z_channels] → conv_in → middle → levels from the coarsest up, each with
  num_res_blocks + 1 ResnetBlocks and a nearest ×2 upsample + 3×3 conv except at full size → out: [B, H, W, 3].
- DiagonalGaussian: the KL model's posterior from moments [B, h, w, 2c] (mean, then log-variance).
- VectorQuantizer (models/quantizer.py): z [B, h, w, D] → its nearest codebook entries, straight-through.
- AutoencoderKL / VQModel: encoder → 1×1 quant_conv → posterior | quantiser → 1×1 post_quant_conv → decoder.
  Two classes rather than one with a regularizer switch, because what `encode` returns (a posterior vs. the
  pre-quantisation latent) and what a forward pass needs (a key to sample vs. whether to update the EMA
  codebook) differ; the names are latent-diffusion's.
- PatchDiscriminator (models/discriminator.py): VQGAN's adversary. With disc_layers > 0 either model holds one
  ("discriminator", in the same params tree, made by init and run by `discriminate`), so one optimizer trains
  both, and a later stage that loads the autoencoder as a frozen model needs nothing new: encode and decode
  never touch those params.

Layer order and shapes follow CompVis/latent-diffusion (ldm/modules/diffusionmodules/model.py,
ldm/models/autoencoder.py), so its `kl-f8` (Stable Diffusion v1's VAE) has exactly 83,653,863 parameters
(tests/models/test_autoencoder.py). Differences:
- attention is always LDM's "vanilla" single-head kind, resampling always uses convs;
- the VQ losses weight as the VQ-VAE paper does (beta on the commitment term); LDM's quantiser (taming's
  VectorQuantizer2 with legacy=True) puts beta on the codebook term instead;
- the EMA codebook (van den Oord et al., 2017, appendix A.1) is not in LDM;
- the discriminator normalises with GroupNorm where taming's uses BatchNorm (see PatchDiscriminator).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from t2i_jax.models import layers
from t2i_jax.models.discriminator import PatchDiscriminator
from t2i_jax.models.quantizer import VectorQuantizer

Dtype = Any
NUM_GROUPS = 32
FACTORS = (1, 2, 4, 8, 16)


class Normalize(nn.Module):
  """GroupNorm(32 groups, eps 1e-6 as LDM) computed in float32, output in `dtype`."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.GroupNorm(num_groups=NUM_GROUPS, epsilon=1e-6, dtype=jnp.float32, param_dtype=jnp.float32)(
        x.astype(jnp.float32))
    return y.astype(self.dtype)


class ResnetBlock(nn.Module):
  """[B, H, W, C] -> [B, H, W, out_channels]: norm → SiLU → conv → norm → SiLU → dropout → conv, plus a skip
  (a 1×1 conv, LDM's nin_shortcut, when the channel count changes). No timestep embedding: there is no t."""

  out_channels: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    h = layers.conv3x3(self.out_channels, self.dtype, name="conv1")(nn.silu(Normalize(self.dtype, name="norm1")(x)))
    h = nn.Dropout(self.dropout)(nn.silu(Normalize(self.dtype, name="norm2")(h)), deterministic=deterministic)
    h = layers.conv3x3(self.out_channels, self.dtype, name="conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype, name="nin_shortcut")(x)
    return x + h


class AttnBlock(nn.Module):
  """[B, H, W, C] -> same: x + proj_out(attention(q, k, v)) over the H·W positions, one head of width C."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = Normalize(self.dtype, name="norm")(x).reshape(b, hgt * wid, 1, c)
    # Dense over channels is LDM's 1×1 conv (same weights, same count); a single head scales logits by C^-1/2.
    q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(h) for n in ("q", "k", "v"))
    h = layers.attention(q, k, v).reshape(b, hgt, wid, c)
    return x + nn.Dense(c, dtype=self.dtype, name="proj_out")(h)


class Downsample(nn.Module):
  """[B, H, W, C] -> [B, H/2, W/2, C]: a stride-2 3×3 conv over the input padded by one row/column at the
  bottom/right only (LDM's padding, which a converted checkpoint needs to give the same output)."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)), dtype=self.dtype, name="conv")(x)


def _middle(h, dropout, dtype, deterministic):
  """ResnetBlock → AttnBlock → ResnetBlock at the coarsest resolution (called inside a compact method)."""
  h = ResnetBlock(h.shape[-1], dropout, dtype, name="mid_block_1")(h, deterministic)
  h = AttnBlock(dtype, name="mid_attn_1")(h)
  return ResnetBlock(h.shape[-1], dropout, dtype, name="mid_block_2")(h, deterministic)


class Encoder(nn.Module):
  """Image [B, H, W, in_channels] -> float32 [B, H/f, W/f, (2 if double_z else 1)·z_channels].

  Attention goes where the side implied by `resolution` (not the input's) is in attn_resolutions, as in LDM,
  so a model trained at 256 px runs the same layers on a 512 px image.
  """

  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  z_channels: int
  resolution: int
  attn_resolutions: Sequence[int] = ()
  in_channels: int = 3
  double_z: bool = True
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    dtype, side = self.dtype, self.resolution
    h = layers.conv3x3(self.ch, dtype, name="conv_in")(x.astype(dtype))
    for level, mult in enumerate(self.ch_mult):
      for i in range(self.num_res_blocks):
        h = ResnetBlock(mult * self.ch, self.dropout, dtype, name=f"down_{level}_block_{i}")(h, deterministic)
        if side in self.attn_resolutions:
          h = AttnBlock(dtype, name=f"down_{level}_attn_{i}")(h)
      if level != len(self.ch_mult) - 1:
        h = Downsample(dtype, name=f"down_{level}_downsample")(h)
        side //= 2
    h = nn.silu(Normalize(dtype, name="norm_out")(_middle(h, self.dropout, dtype, deterministic)))
    out = layers.conv3x3((2 if self.double_z else 1) * self.z_channels, dtype, name="conv_out")(h)
    return out.astype(jnp.float32)


class Decoder(nn.Module):
  """Latent [B, h, w, z_channels] -> float32 image [B, h·f, w·f, out_channels].

  The activation entering conv_out, [B, H, W, ch], is sown as intermediates/features (kept only when applied
  with mutable=["intermediates"]): with `decoder_head` the output is then a function of conv_out's params
  alone, which VQGAN's adaptive GAN weight differentiates without running the network again.
  """

  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  z_channels: int
  resolution: int
  attn_resolutions: Sequence[int] = ()
  out_channels: int = 3
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z, deterministic: bool = True):
    dtype, side = self.dtype, self.resolution // 2 ** (len(self.ch_mult) - 1)
    h = layers.conv3x3(self.ch_mult[-1] * self.ch, dtype, name="conv_in")(z.astype(dtype))
    h = _middle(h, self.dropout, dtype, deterministic)
    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for i in range(self.num_res_blocks + 1):
        h = ResnetBlock(mult * self.ch, self.dropout, dtype, name=f"up_{level}_block_{i}")(h, deterministic)
        if side in self.attn_resolutions:
          h = AttnBlock(dtype, name=f"up_{level}_attn_{i}")(h)
      if level != 0:
        h = layers.Upsample(True, dtype, name=f"up_{level}_upsample")(h)
        side *= 2
    h = nn.silu(Normalize(dtype, name="norm_out")(h))
    self.sow("intermediates", "features", h)
    return layers.conv3x3(self.out_channels, dtype, name="conv_out")(h).astype(jnp.float32)


def decoder_head(conv_out_params, features: jax.Array, out_channels: int, dtype: Dtype = jnp.float32) -> jax.Array:
  """The decoder's last conv as a function of its params {"kernel" [3, 3, ch, C], "bias" [C]}: the sown features
  [B, H, W, ch] -> float32 image [B, H, W, C], the same computation (and numbers) as in Decoder.__call__."""
  return layers.conv3x3(out_channels, dtype).apply({"params": conv_out_params}, features).astype(jnp.float32)


@flax.struct.dataclass
class DiagonalGaussian:
  """A Gaussian with diagonal covariance over latents: mean and logvar [B, h, w, c], float32."""

  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
    """From [B, h, w, 2c] (mean channels first); logvar clipped to [-30, 20] as LDM, so exp() stays finite."""
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return cls(mean, jnp.clip(logvar, -30.0, 20.0))

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  def sample(self, key: jax.Array) -> jax.Array:
    """mean + std·ε, ε ~ N(0, I): [B, h, w, c]."""
    return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self) -> jax.Array:
    """KL(q ‖ N(0, I)) per example, summed over h, w, c: [B]."""
    return 0.5 * jnp.sum(self.mean**2 + jnp.exp(self.logvar) - 1.0 - self.logvar, axis=(1, 2, 3))


class _FirstStage(nn.Module):
  """Fields, geometry and checks shared by AutoencoderKL and VQModel (see the module docstring)."""

  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  z_channels: int
  embed_dim: int
  resolution: int
  attn_resolutions: Sequence[int] = ()
  in_channels: int = 3
  out_channels: int = 3
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  # VQGAN's patch discriminator, trained beside the autoencoder (train/autoencoder_loss.py): 0 for none.
  disc_layers: int = 0
  disc_channels: int = 64

  @property
  def downsampling_factor(self) -> int:
    """f: the image side over the latent side."""
    return 2 ** (len(self.ch_mult) - 1)

  @property
  def latent_shape(self) -> tuple:
    """(h, w, embed_dim) of the latent of a resolution × resolution image."""
    side = self.resolution // self.downsampling_factor
    return (side, side, self.embed_dim)

  def check_config(self) -> None:
    """Raises a one-line ValueError for an architecture that cannot be built."""
    f = self.downsampling_factor
    if f not in FACTORS:
      raise ValueError(f"ch_mult={tuple(self.ch_mult)} gives f={f}; use 1 to 5 levels (f in {FACTORS}).")
    if self.resolution % f:
      raise ValueError(f"resolution={self.resolution} is not divisible by f={f}; use a multiple of {f}.")
    bad = sorted({m * self.ch for m in self.ch_mult if (m * self.ch) % NUM_GROUPS})
    if bad:
      raise ValueError(f"channel counts {bad} (ch × ch_mult) do not split into {NUM_GROUPS} GroupNorm groups.")
    sides = [self.resolution // 2**i for i in range(len(self.ch_mult))]
    if set(self.attn_resolutions) - set(sides):
      raise ValueError(f"attn_resolutions {tuple(self.attn_resolutions)} must be among the feature sizes {sides}.")
    if self.disc_layers < 0:
      raise ValueError(f"disc_layers={self.disc_layers}; use 0 (no discriminator) or a positive number of layers.")
    if self.disc_layers:
      if self.disc_channels <= 0 or (2 * self.disc_channels) % NUM_GROUPS:
        raise ValueError(f"disc_channels={self.disc_channels} must be a positive multiple of {NUM_GROUPS // 2}: the "
                         f"discriminator's normed layers (2·disc_channels and more) split into {NUM_GROUPS} groups.")
      if PatchDiscriminator.output_side(self.resolution, self.disc_layers) < 1:
        raise ValueError(f"disc_layers={self.disc_layers} leaves no patch of a {self.resolution} px image "
                         f"(a side S becomes S / 2^disc_layers - 2); use fewer layers.")

  def _check_image(self, x):
    f = self.downsampling_factor
    if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(
          f"x has shape {tuple(x.shape)}; expected [B, H, W, {self.in_channels}], H and W divisible by {f}.")

  def _setup_coders(self, double_z: bool, moments: int):
    self.check_config()
    shared = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                  z_channels=self.z_channels, resolution=self.resolution,
                  attn_resolutions=tuple(self.attn_resolutions), dropout=self.dropout, dtype=self.dtype)
    self.encoder = Encoder(**shared, in_channels=self.in_channels, double_z=double_z)
    self.decoder = Decoder(**shared, out_channels=self.out_channels)
    # Float32 because the log-variance and the codebook distances are sensitive, and these convs are tiny.
    self.quant_conv = nn.Conv(moments, (1, 1), dtype=jnp.float32)
    self.post_quant_conv = nn.Conv(self.z_channels, (1, 1), dtype=jnp.float32)
    if self.disc_layers:
      self.discriminator = PatchDiscriminator(self.disc_channels, self.disc_layers, self.dtype)

  def discriminate(self, x):
    """Image [B, H, W, out_channels] -> float32 patch logits [B, H', W', 1] (PatchDiscriminator)."""
    if not self.disc_layers:
      raise ValueError("this autoencoder has no discriminator; set model.disc_layers > 0 to build one.")
    return self.discriminator(x)

  def _init_discriminator(self, recon):
    # model.init runs __call__ only: the discriminator's params are made there, beside the autoencoder's.
    if self.disc_layers and self.is_initializing():
      self.discriminator(recon)

  def decode(self, z, deterministic: bool = True):
    """Latent [B, h, w, embed_dim] -> float32 image [B, h·f, w·f, out_channels]."""
    if z.ndim != 4 or z.shape[-1] != self.embed_dim:
      raise ValueError(f"z has shape {tuple(z.shape)}; expected [B, h, w, embed_dim={self.embed_dim}].")
    return self.decoder(self.post_quant_conv(z.astype(jnp.float32)), deterministic)


class AutoencoderKL(_FirstStage):
  """The KL-regularised autoencoder; latents z ~ posterior [B, H/f, W/f, embed_dim]."""

  def setup(self):
    self._setup_coders(double_z=True, moments=2 * self.embed_dim)

  def encode(self, x, deterministic: bool = True) -> DiagonalGaussian:
    """Image [B, H, W, in_channels] -> the posterior over latents [B, H/f, W/f, embed_dim]."""
    self._check_image(x)
    return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x, deterministic)))

  def __call__(self, x, key: Optional[jax.Array] = None, deterministic: bool = True):
    """(reconstruction [B, H, W, out_channels], {"kl": [B]}); decodes a posterior sample if `key` is
    given, else its mean. Dropout (deterministic=False) draws from the "dropout" rng."""
    posterior = self.encode(x, deterministic)
    z = posterior.mode() if key is None else posterior.sample(key)
    recon = self.decode(z, deterministic)
    self._init_discriminator(recon)
    return recon, {"kl": posterior.kl()}


class VQModel(_FirstStage):
  """The vector-quantised autoencoder; latents are the pre-quantisation [B, H/f, W/f, embed_dim], quantised
  on decoding (as LDM's VQModelInterface, whose diffusion model runs before quantisation)."""

  n_embed: int = 8192  # LDM's vq-f4
  beta: float = 0.25
  ema: bool = False
  decay: float = 0.99
  epsilon: float = 1e-5

  def setup(self):
    self._setup_coders(double_z=False, moments=self.embed_dim)
    self.quantizer = VectorQuantizer(self.n_embed, self.embed_dim, self.beta, self.ema, self.decay, self.epsilon)

  def encode(self, x, deterministic: bool = True):
    """Image [B, H, W, in_channels] -> float32 pre-quantisation latent [B, H/f, W/f, embed_dim]."""
    self._check_image(x)
    return self.quant_conv(self.encoder(x, deterministic))

  def decode(self, z, quantize: bool = True, deterministic: bool = True):
    """Latent [B, h, w, embed_dim] (quantised first unless quantize=False) -> float32 image [B, h·f, w·f, C]."""
    if quantize:
      z, _ = self.quantizer(z)
    return super().decode(z, deterministic)

  def encode_indices(self, x):
    """Image [B, H, W, in_channels] -> int32 codes [B, H/f, W/f]: the image as discrete tokens (DALL·E's use
    of a VQ model)."""
    _, aux = self.quantizer(self.encode(x))
    return aux["indices"]

  def decode_indices(self, indices):
    """int32 codes [B, h, w] -> float32 image [B, h·f, w·f, C]: each code's codebook entry, decoded."""
    variables = self.quantizer.variables
    table = variables["vq_stats"]["codebook"] if self.ema else variables["params"]["codebook"]
    return super().decode(jnp.asarray(table)[indices])

  def __call__(self, x, update_codebook: bool = False, deterministic: bool = True):
    """(reconstruction [B, H, W, out_channels], the quantiser's aux); update_codebook as VectorQuantizer."""
    z_q, aux = self.quantizer(self.encode(x, deterministic), update_codebook)
    recon = self.decode(z_q, quantize=False, deterministic=deterministic)
    self._init_discriminator(recon)
    return recon, aux
