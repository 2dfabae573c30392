"""The latent-diffusion first stage: shapes, layer placement, the Gaussian posterior, the vector quantiser, sizes,
and VQGAN's patch discriminator.

Model calls are jitted (the module static, `_apply`): op by op, each call compiles dozens of small programs.
"""

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.models.autoencoder import AutoencoderKL, DiagonalGaussian, Downsample, VQModel, decoder_head
from t2i_jax.models.discriminator import PatchDiscriminator
from t2i_jax.models.quantizer import VectorQuantizer
from tests.models.util import random_params

TINY = dict(ch=32, num_res_blocks=1, z_channels=4, embed_dim=3, resolution=16, attn_resolutions=(8,))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("mutable", "update_codebook"))
def _apply(module, variables, *args, **kwargs):
  return module.apply(variables, *args, **kwargs)


def _count(model, size):
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))["params"]
  return {name: sum(leaf.size for leaf in jax.tree.leaves(tree)) for name, tree in shapes.items()}


# --- published sizes ----------------------------------------------------------------------------------------------


def test_kl_f8_parameter_count():
  # LDM's models/first_stage_models/kl-f8 (= Stable Diffusion v1's VAE, which diffusers reports at 83,653,863).
  # Checked against the reference: latent-diffusion's Encoder/Decoder (commit a506df5) built in torch with this
  # config hold 34,163,592 and 49,490,179 parameters, quant_conv 8→8 72, post_quant_conv 4→4 20. The CompVis
  # checkpoint also stores the LPIPS/discriminator loss, which is not part of the model and not counted here.
  model = AutoencoderKL(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, embed_dim=4, resolution=256)
  counts = _count(model, 256)
  assert counts == {"encoder": 34_163_592, "decoder": 49_490_179, "quant_conv": 72, "post_quant_conv": 20}
  assert sum(counts.values()) == 83_653_863


def test_vq_f4_parameter_count():
  # LDM's vq-f4 config; no published figure, so the count is the reference's torch modules' (as above) plus the
  # 8192 × 3 codebook. With ema=True the codebook is state, not a param.
  config = dict(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, embed_dim=3, resolution=256, n_embed=8192)
  assert sum(_count(VQModel(**config), 256).values()) == 55_322_782
  assert sum(_count(VQModel(**config, ema=True), 256).values()) == 55_322_782 - 8192 * 3


# --- shapes and structure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ch_mult, f", [((1, 2), 2), ((1, 2, 2), 4)])
@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_shapes(kind, ch_mult, f):
  model = AutoencoderKL(ch_mult=ch_mult, **TINY) if kind == "kl" else VQModel(ch_mult=ch_mult, n_embed=16, **TINY)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  variables = random_params(model, jax.random.PRNGKey(0), x)

  @jax.jit
  def run(variables, x):
    latent = model.apply(variables, x, method=model.encode)
    z = latent.mode() if kind == "kl" else latent
    decoded = model.apply(variables, z, method=model.decode)
    return z, decoded, model.apply(variables, x)

  z, decoded, (recon, aux) = run(variables, x)
  assert model.downsampling_factor == f and model.latent_shape == (16 // f, 16 // f, 3)
  assert z.shape == (2, 16 // f, 16 // f, 3)
  if f == 4:
    assert z.shape == (2, 4, 4, 3)
  assert recon.shape == decoded.shape == (2, 16, 16, 3) and recon.dtype == jnp.float32
  assert np.all(np.isfinite(recon))
  # The forward pass decodes the posterior mean (no key) / the quantised latent: the same as encode → decode.
  np.testing.assert_allclose(recon, decoded, rtol=1e-5, atol=1e-5)
  if kind == "kl":
    assert aux["kl"].shape == (2,) and np.all(aux["kl"] > 0)
  else:
    assert aux["indices"].shape == (2, 16 // f, 16 // f) and aux["indices"].dtype == jnp.int32


def test_attention_placement():
  # Attention only where the feature map is 8 px: level 1 of a 16 px, f = 4 model; the middle always has one.
  model = AutoencoderKL(ch_mult=(1, 2, 2), **TINY)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))))["params"]
  assert sorted(k for k in params["encoder"] if "attn" in k) == ["down_1_attn_0", "mid_attn_1"]
  assert sorted(k for k in params["decoder"] if "attn" in k) == ["mid_attn_1", "up_1_attn_0", "up_1_attn_1"]
  assert "down_2_downsample" not in params["encoder"] and "up_0_upsample" not in params["decoder"]


def test_downsample_pads_bottom_right_only():
  x = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
  for tap, expected in [((0, 0), x[0, ::2, ::2, 0]), ((2, 2), np.pad(x[0, 2::2, 2::2, 0], ((0, 1), (0, 1))))]:
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[tap + (0, 0)] = 1.0
    out = _apply(Downsample(), {"params": {"conv": {"kernel": kernel, "bias": np.zeros(1, np.float32)}}}, x)
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


@pytest.mark.parametrize(
    "change, message",
    [(dict(resolution=18), "not divisible by f=4"), (dict(ch=48), "32 GroupNorm groups"),
     (dict(ch_mult=(1,) * 6), "f=32"), (dict(attn_resolutions=(2,)), "feature sizes"),
     (dict(disc_layers=3), "leaves no patch of a 16 px image"),
     (dict(disc_layers=1, disc_channels=24), "multiple of 16"), (dict(disc_layers=-1), "disc_layers=-1")],
)
def test_bad_config(change, message):
  model = AutoencoderKL(**{**TINY, "ch_mult": (1, 2, 2), **change})
  with pytest.raises(ValueError, match=message):
    model.check_config()


def test_bad_input():
  model = AutoencoderKL(ch_mult=(1, 2, 2), **TINY)
  with pytest.raises(ValueError, match="H and W divisible by 4"):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 18, 18, 3))))


# --- the KL posterior ---------------------------------------------------------------------------------------------


def test_gaussian_kl_mode_and_clipping():
  mean = np.array([1.0, 0.5, -2.0, 0.0], np.float32).reshape(1, 1, 2, 2)
  logvar = np.array([0.0, np.log(2.0), -1.0, 50.0], np.float32).reshape(1, 1, 2, 2)
  posterior = DiagonalGaussian.from_moments(jnp.concatenate([mean, logvar], -1))  # [1, 1, 2, 4]: mean first
  # By hand, per element 0.5·(m² + e^lv - 1 - lv), with lv = 50 clipped to 20:
  terms = [0.5 * (1 + 1 - 1 - 0), 0.5 * (0.25 + 2 - 1 - np.log(2.0)), 0.5 * (4 + np.exp(-1.0) - 1 + 1),
           0.5 * (0 + np.exp(20.0) - 1 - 20)]
  np.testing.assert_allclose(posterior.kl(), [sum(terms)], rtol=1e-6)
  np.testing.assert_array_equal(posterior.mode(), mean)
  assert float(posterior.logvar.max()) == 20.0
  clipped = DiagonalGaussian.from_moments(jnp.array([0.0, -100.0]).reshape(1, 1, 1, 2))
  assert float(clipped.logvar[0, 0, 0, 0]) == -30.0


def test_gaussian_sample_moments():
  # Channel 0: N(1.5, 0.5²); channel 1: N(-2, 2²); 50,000 draws each (standard errors 0.0022 and 0.0089).
  mean = jnp.broadcast_to(jnp.array([1.5, -2.0]), (1, 200, 250, 2))
  logvar = jnp.broadcast_to(jnp.log(jnp.array([0.25, 4.0])), (1, 200, 250, 2))
  draws = np.asarray(DiagonalGaussian(mean, logvar).sample(jax.random.PRNGKey(3))).reshape(-1, 2)
  np.testing.assert_allclose(draws.mean(0), [1.5, -2.0], atol=0.04)
  np.testing.assert_allclose(draws.std(0), [0.5, 2.0], rtol=0.015)
  assert abs(draws[:, 0].mean() - 1.5) < 0.01


# --- the vector quantiser -----------------------------------------------------------------------------------------

CODEBOOK = np.array([[0, 0], [1, 0], [0, 1], [-1, -1], [5, 5]], np.float32)  # the last entry is never nearest
Z = np.array([[0.9, 0.2], [0.1, 0.1], [0.2, 0.7], [-0.6, -0.4], [0.45, 0.0], [0.3, 0.6]], np.float32)
Z = Z.reshape(2, 1, 3, 2)
HAND_INDICES = np.array([1, 0, 2, 3, 0, 2]).reshape(2, 1, 3)


def _vq(**kw):
  return VectorQuantizer(num_embeddings=5, embedding_dim=2, beta=0.25, **kw)


def test_vq_indices_losses_and_perplexity():
  vq = _vq()
  z_q, aux = _apply(vq, {"params": {"codebook": CODEBOOK}}, Z)
  flat = Z.reshape(-1, 2)
  dists = ((flat[:, None] - CODEBOOK[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(aux["indices"], dists.argmin(1).reshape(2, 1, 3))
  np.testing.assert_array_equal(aux["indices"], HAND_INDICES)
  q = CODEBOOK[HAND_INDICES.reshape(-1)].reshape(Z.shape)
  np.testing.assert_allclose(z_q, q, atol=1e-7)
  np.testing.assert_allclose(aux["commitment_loss"], 0.25 * np.mean((Z - q) ** 2), rtol=1e-6)
  np.testing.assert_allclose(aux["codebook_loss"], np.mean((Z - q) ** 2), rtol=1e-6)
  usage = np.array([2, 1, 2, 1, 0]) / 6
  used = usage[usage > 0]
  np.testing.assert_allclose(aux["perplexity"], np.exp(-(used * np.log(used)).sum()), rtol=1e-5)


def test_vq_straight_through_gradient():
  vq, g = _vq(), np.random.default_rng(1).standard_normal(Z.shape, np.float32)
  params = {"params": {"codebook": jnp.asarray(CODEBOOK)}}
  grad = jax.jit(jax.grad(lambda z: jnp.sum(vq.apply(params, z)[0] * g)))(Z)
  np.testing.assert_allclose(grad, g, rtol=1e-6)


def test_vq_loss_gradients():
  vq = _vq()

  def loss_grads(name):
    fn = lambda params, z: vq.apply(params, z)[1][name]  # noqa: E731
    return jax.jit(jax.grad(fn, argnums=(0, 1)))({"params": {"codebook": CODEBOOK}}, Z)

  q = CODEBOOK[HAND_INDICES.reshape(-1)]
  flat = Z.reshape(-1, 2)
  # codebook_loss = mean((sg(z) - e)²) over 12 numbers: entry i gets Σ_{z → i} 2(e_i - z) / 12, z gets nothing.
  d_book, d_z = loss_grads("codebook_loss")
  expected = np.zeros_like(CODEBOOK)
  np.add.at(expected, HAND_INDICES.reshape(-1), 2 * (q - flat) / 12)
  np.testing.assert_allclose(d_book["params"]["codebook"], expected, rtol=1e-5, atol=1e-7)
  assert np.all(expected[4] == 0) and np.all(d_z == 0)
  # commitment_loss = beta·mean((z - sg(e))²): z gets 2·beta(z - q) / 12, the codebook nothing.
  d_book, d_z = loss_grads("commitment_loss")
  np.testing.assert_allclose(d_z.reshape(-1, 2), 2 * 0.25 * (flat - q) / 12, rtol=1e-5)
  assert np.all(d_book["params"]["codebook"] == 0)


def _ema_state(codebook):
  return {"vq_stats": {"codebook": codebook, "cluster_size": np.ones(len(codebook), np.float32), "embed_sum": codebook}}


def test_vq_ema_update_by_hand():
  # A large epsilon, so that the Laplace smoothing shows at float32 precision.
  vq = VectorQuantizer(num_embeddings=2, embedding_dim=2, ema=True, decay=0.9, epsilon=0.1)
  init = jax.jit(vq.init)(jax.random.PRNGKey(0), np.zeros((1, 1, 3, 2), np.float32))
  assert set(init) == {"vq_stats"}  # no params: the codebook is not trained by gradients
  # The stats start as if each entry had been assigned once to its own (uniform ±1/K, as taming) initial value.
  stats = init["vq_stats"]
  np.testing.assert_array_equal(stats["cluster_size"], [1.0, 1.0])
  np.testing.assert_array_equal(stats["embed_sum"], stats["codebook"])
  assert np.all(np.abs(stats["codebook"]) <= 0.5) and np.std(stats["codebook"]) > 0.05
  book = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
  z = np.array([[0.1, 0.2], [-0.1, 0.0], [0.9, 1.2]], np.float32).reshape(1, 1, 3, 2)
  (z_q, aux), state = _apply(vq, _ema_state(book), z, update_codebook=True, mutable=("vq_stats",))
  np.testing.assert_array_equal(aux["indices"].reshape(-1), [0, 0, 1])
  np.testing.assert_allclose(z_q.reshape(-1, 2), book[[0, 0, 1]], atol=1e-7)  # quantised with the old codebook
  assert float(aux["codebook_loss"]) == 0.0
  # counts n = [2, 1], sums [[0, 0.2], [0.9, 1.2]]:
  # N = 0.9·[1, 1] + 0.1·[2, 1] = [1.1, 1.0];  m = 0.9·book + 0.1·sums = [[0, 0.02], [0.99, 1.02]]
  # Laplace: N' = (N + ε) / (2.1 + 2ε) · 2.1 = [1.2, 1.1] / 2.3 · 2.1;  e = m / N'.
  stats = state["vq_stats"]
  np.testing.assert_allclose(stats["cluster_size"], [1.1, 1.0], rtol=1e-6)
  np.testing.assert_allclose(stats["embed_sum"], [[0.0, 0.02], [0.99, 1.02]], rtol=1e-6, atol=1e-7)
  smoothed = np.array([1.2, 1.1]) / 2.3 * 2.1
  expected = np.array([[0.0, 0.02], [0.99, 1.02]]) / smoothed[:, None]
  np.testing.assert_allclose(stats["codebook"], expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(expected, [[0.0, 0.01825397], [0.98571429, 1.01558442]], rtol=1e-6)

  # decay 0 and a small epsilon: the entries jump to the means of their vectors (up to the smoothing).
  fast = vq.clone(decay=0.0, epsilon=1e-5)
  _, state = _apply(fast, _ema_state(book), z, update_codebook=True, mutable=("vq_stats",))
  np.testing.assert_allclose(state["vq_stats"]["codebook"], [[0.0, 0.1], [0.9, 1.2]], rtol=1e-4)

  # Without update_codebook nothing changes; asking for it without the mutable collection, or without EMA, fails.
  _, state = _apply(vq, _ema_state(book), z, mutable=("vq_stats",))
  np.testing.assert_array_equal(state["vq_stats"]["codebook"], book)
  with pytest.raises(ValueError, match='mutable=\\["vq_stats"\\]'):
    _apply(vq, _ema_state(book), z, update_codebook=True)
  with pytest.raises(ValueError, match="needs ema=True"):
    _apply(_vq(), {"params": {"codebook": CODEBOOK}}, Z, update_codebook=True)


def test_vq_model_ema_updates_through_the_model():
  model = VQModel(ch_mult=(1, 2), n_embed=8, ema=True, **TINY)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  variables = random_params(model, jax.random.PRNGKey(1), x)
  variables["vq_stats"] = {"quantizer": _ema_state(variables["vq_stats"]["quantizer"]["codebook"])["vq_stats"]}
  (_, aux), state = jax.jit(lambda v, x: model.apply(v, x, update_codebook=True, mutable=["vq_stats"]))(variables, x)
  stats = state["vq_stats"]["quantizer"]
  counts = np.bincount(np.asarray(aux["indices"]).reshape(-1), minlength=8)
  np.testing.assert_allclose(stats["cluster_size"], 0.99 + 0.01 * counts, rtol=1e-6)


# --- the patch discriminator --------------------------------------------------------------------------------------


def _without_group_norm(next_fun, args, kwargs, context):
  # GroupNorm's statistics span the image; with the norms skipped, what a logit depends on is the convs' reach.
  if isinstance(context.module, nn.GroupNorm) and context.method_name == "__call__":
    return args[0]
  return next_fun(*args, **kwargs)


@pytest.mark.parametrize("layers, side, out, field", [(2, 48, 10, 34), (3, 96, 10, 70)])
def test_discriminator_patches_and_receptive_field(layers, side, out, field):
  # pix2pix's 70×70 PatchGAN: 30×30 logits for a 256 px image; a side S gives S / 2^L - 2 logits.
  big = jax.eval_shape(lambda: PatchDiscriminator(64, 3).init_with_output(
      jax.random.PRNGKey(0), jnp.zeros((2, 256, 256, 3)))[0])
  assert big.shape == (2, 30, 30, 1) and PatchDiscriminator.receptive_field(3) == 70
  disc = PatchDiscriminator(channels=16, num_layers=layers)
  x = np.random.default_rng(0).standard_normal((1, side, side, 3), np.float32)
  variables = random_params(disc, jax.random.PRNGKey(1), x, scale=0.3)
  assert jax.eval_shape(disc.apply, variables, x).shape == (1, out, out, 1)
  assert PatchDiscriminator.output_side(side, layers) == out
  assert PatchDiscriminator.receptive_field(layers) == field

  def support(intercept):
    def logit(x):
      with nn.intercept_methods(_without_group_norm) if intercept else contextlib.nullcontext():
        return disc.apply(variables, x)[0, out // 2, out // 2, 0]
    touched = np.abs(np.asarray(jax.jit(jax.grad(logit))(x))[0]).sum(-1) > 0  # one program, not op by op
    rows, cols = np.nonzero(touched.any(1))[0], np.nonzero(touched.any(0))[0]
    return rows.min(), rows.max(), cols.min(), cols.max()

  # An interior logit reaches exactly a field × field patch, away from the image's border.
  top, bottom, left, right = support(intercept=True)
  assert bottom - top + 1 == right - left + 1 == field and top > 0 and bottom < side - 1
  if layers == 2:  # with the norms, every pixel moves it a little (through the image's statistics)
    assert support(intercept=False) == (0, side - 1, 0, side - 1)


def test_the_discriminator_lives_in_the_models_params():
  config = dict(ch_mult=(1, 2), disc_layers=2, disc_channels=16, **TINY)
  model = AutoencoderKL(**config)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  # Either model's init makes the discriminator's params, beside the autoencoder's.
  vq_shapes = jax.eval_shape(lambda: VQModel(n_embed=16, **config).init(jax.random.PRNGKey(0), x))["params"]
  assert "discriminator" in vq_shapes
  variables = random_params(model, jax.random.PRNGKey(1), x)
  params = variables["params"]
  assert jax.tree.map(jnp.shape, params["discriminator"]) == jax.tree.map(jnp.shape, vq_shapes["discriminator"])
  # 4×4 convs 3→16 (bias), 16→32, 32→64 (no bias: a GroupNorm follows), 64→1 (bias); two GroupNorms.
  sizes = {k: sum(v.size for v in jax.tree.leaves(t)) for k, t in params["discriminator"].items()}
  assert sizes == {"conv_0": 16 * 48 + 16, "conv_1": 16 * 16 * 32, "conv_2": 16 * 32 * 64, "conv_out": 16 * 64 + 1,
                   "norm_1": 64, "norm_2": 128}

  @jax.jit
  def forward(variables, x):
    (recon, _), sown = model.apply(variables, x, mutable=["intermediates"])
    return recon, sown["intermediates"]["decoder"]["features"][0], model.apply(variables, recon, method="discriminate")

  recon, features, logits = forward(variables, x)
  assert logits.shape == (2, 2, 2, 1) and logits.dtype == jnp.float32
  # The decoder's last conv, recomputed from its sown input (a program of its own), gives the reconstruction bit
  # for bit.
  assert features.shape == (2, 16, 16, 32)
  head = jax.jit(decoder_head, static_argnums=2)(params["decoder"]["conv_out"], features, 3)
  np.testing.assert_array_equal(head, recon)
  # A model without a discriminator has none to run; its params are the same tree less the discriminator.
  plain = model.clone(disc_layers=0)
  shapes = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), x))["params"]
  assert set(shapes) == set(params) - {"discriminator"}
  with pytest.raises(ValueError, match="set model.disc_layers > 0"):
    jax.eval_shape(functools.partial(plain.apply, method="discriminate"), {"params": {k: params[k] for k in shapes}}, x)
