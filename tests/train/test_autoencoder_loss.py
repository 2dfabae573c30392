"""The first stage's training: the loss's terms against their definitions, the reconstruction falling over a
few dozen steps, the settings it cannot train refused, VQGAN's adversarial terms (hinge, adaptive weight,
disc_start, gradients by parts) and the EMA codebook in the train state (one step by hand, VQ `:runlocal`
through the loop, a resume and the loaded stage's decode). KL `:runlocal,gan` through the loop and
--mode=eval: tests/pipelines/test_latent.py, whose latent U-Net trains on it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from t2i_jax import models
from t2i_jax.data import shapes
from t2i_jax.models import frozen
from t2i_jax.pipelines import stage as stage_lib
from t2i_jax.train import autoencoder_loss, loop, state as state_lib, step as step_lib
from tests.conftest import load_config

# One level (no down- or upsampling): the loss and the train state see only the model's outputs and variables, and
# the levels (tests/models/test_autoencoder.py's) would double every program's size and compile time.
TINY = dict(name="autoencoder_kl", ch=32, ch_mult=(1,), num_res_blocks=1, z_channels=4, embed_dim=4, resolution=8)


def _renders(num, size=8):
  images, _, _ = shapes.render_batch("train", 0, 0, num, image_size=2 * size)
  return shapes.to_float(images.reshape(num, size, 2, size, 2, 3).mean(axis=(2, 4)).astype(np.uint8))


def _loss(model_config, section, params, batch, seed=0):
  model = models.build(model_config)
  return autoencoder_loss.make_loss_fn(model, section)(params, batch, jax.random.PRNGKey(seed))


GAN = dict(TINY, disc_layers=1, disc_channels=16)  # 8 px: logits [B, 2, 2, 1]


def _split(tree):
  """(autoencoder part, discriminator part) of a params-shaped tree."""
  return {k: v for k, v in tree.items() if k != "discriminator"}, tree["discriminator"]


@pytest.fixture(scope="module")
def gan():
  """A tiny KL model with a discriminator, its loss (disc_weight 0.5, disc_start 3) and the loss's value, aux
  and gradient at steps 2 and 3, from one compiled program. Its params without the discriminator are TINY's
  (the same tree), which the KL tests share."""
  model = models.build(GAN)
  batch = {"image": _renders(4)}
  # Op by op, as the other models' inits: most of their ops are then already compiled, where each jitted init
  # would be a program the size of the network's.
  params = model.init(jax.random.PRNGKey(0), batch["image"])["params"]
  section = common.section("autoencoder", kl_weight=1e-3, disc_weight=0.5, disc_start=3)
  loss_fn = autoencoder_loss.make_loss_fn(model, section)
  rng = jax.random.PRNGKey(2)
  grad_fn = jax.jit(jax.value_and_grad(lambda p, s: loss_fn(p, batch, rng, None, s), has_aux=True))
  at = {s: grad_fn(params, jnp.int32(s)) for s in (2, 3)}
  return dict(model=model, params=params, batch=batch, loss_fn=loss_fn, rng=rng, at=at)


def test_the_loss_terms_are_their_definitions(gan):
  # Op by op: every pass after the first dispatches ops already compiled for these shapes, where jitting each
  # would compile the whole network again.
  model = models.build(TINY)
  batch = gan["batch"]
  params = _split(gan["params"])[0]  # TINY's tree: GAN is TINY with a discriminator beside it
  l1 = common.section("autoencoder", reconstruction="l1", kl_weight=0.0)
  loss, aux = _loss(TINY, l1, params, batch)
  metrics = aux["metrics"]
  # The reconstruction the loss decodes: a posterior sample from the loss's own split of the rng.
  recon, extra = model.apply({"params": params}, batch["image"], jax.random.split(jax.random.PRNGKey(0))[0])
  error = np.asarray(recon) - batch["image"]
  np.testing.assert_allclose(float(loss), np.abs(error).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kl"]), float(np.mean(extra["kl"])), rtol=1e-5)
  mse = (error ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(float(metrics["psnr"]), np.mean(10 * np.log10(4 / mse)), rtol=1e-4)
  # The KL enters per pixel of the image, weighted: LDM's sum-over-pixels loss divided by H·W·C.
  weighted, _ = _loss(TINY, common.section("autoencoder", reconstruction="l1", kl_weight=0.5), params, batch)
  np.testing.assert_allclose(float(weighted - loss), 0.5 * float(np.mean(extra["kl"])) / (8 * 8 * 3), rtol=1e-4)
  l2, _ = _loss(TINY, common.section("autoencoder", reconstruction="l2", kl_weight=0.0), params, batch)
  np.testing.assert_allclose(float(l2), (error ** 2).mean(), rtol=1e-5)
  vq = dict(TINY, name="autoencoder_vq", n_embed=16)
  vq_model = models.build(vq)
  vq_params = vq_model.init(jax.random.PRNGKey(1), batch["image"])["params"]
  vq_loss, vq_aux = _loss(vq, l1, vq_params, batch)
  recon, extra = vq_model.apply({"params": vq_params}, batch["image"])
  np.testing.assert_allclose(float(vq_loss), np.abs(np.asarray(recon) - batch["image"]).mean()
                             + float(extra["commitment_loss"]) + float(extra["codebook_loss"]), rtol=1e-5)


def test_the_reconstruction_falls_over_a_few_dozen_steps(gan):
  model = models.build(TINY)
  batch = {"image": _renders(8)}
  loss_fn = autoencoder_loss.make_loss_fn(model, common.section("autoencoder"))
  optimizer = state_lib.make_optimizer(common.optim(3e-3, warmup_steps=1))
  state = state_lib.create_train_state(_split(gan["params"])[0], optimizer)
  step = jax.jit(step_lib.make_train_step(loss_fn, optimizer, ema_rate=0.9))
  history = []
  for i in range(40):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    history.append(float(metrics["reconstruction"]))
  assert np.mean(history[-5:]) < 0.5 * np.mean(history[:3]), history


def test_what_the_trainer_cannot_train_is_refused():
  with pytest.raises(ValueError, match="reconstruction='l3'"):
    autoencoder_loss.make_loss_fn(models.build(TINY), common.section("autoencoder", reconstruction="l3"))
  with pytest.raises(ValueError, match="disc_weight=0.5 needs a discriminator: set model.disc_layers > 0"):
    autoencoder_loss.make_loss_fn(models.build(TINY), common.section("autoencoder", disc_weight=0.5))
  with pytest.raises(ValueError, match="disc_layers=1 builds a discriminator that autoencoder.disc_weight=0 never"):
    autoencoder_loss.make_loss_fn(models.build(GAN), common.section("autoencoder"))
  with pytest.raises(ValueError, match="disc_start=-1 must be >= 0"):
    autoencoder_loss.make_loss_fn(models.build(GAN), common.section("autoencoder", disc_weight=0.5, disc_start=-1))
  loss_fn = autoencoder_loss.make_loss_fn(models.build(GAN), common.section("autoencoder", disc_weight=0.5))
  with pytest.raises(ValueError, match="call the loss with the optimizer step"):
    loss_fn(None, {"image": np.zeros((1, 8, 8, 3), np.float32)}, jax.random.PRNGKey(0))
  ema = models.build(dict(TINY, name="autoencoder_vq", n_embed=16, ema=True))
  with pytest.raises(ValueError, match="keeps its codebook in model_state"):
    autoencoder_loss.make_loss_fn(ema, common.section("autoencoder"))(None, {"image": np.zeros((1, 8, 8, 3))},
                                                                      jax.random.PRNGKey(0))


# --- VQGAN's adversarial terms ------------------------------------------------------------------------------------

def test_hinge_loss_by_hand():
  real, fake = np.array([2.0, 0.5, -1.0]), np.array([-2.0, 0.3, 1.0])
  # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1.3, 2]: ½ (2.5 / 3 + 3.3 / 3).
  np.testing.assert_allclose(float(autoencoder_loss.hinge_d_loss(real, fake)), 0.5 * (2.5 + 3.3) / 3, rtol=1e-6)
  assert float(autoencoder_loss.hinge_d_loss(np.full(4, 1.5), np.full(4, -1.0))) == 0.0  # both past the margin


def test_the_adaptive_weight_and_the_hinge_loss_against_the_full_model(gan):
  model, params, x, rng = gan["model"], gan["params"], gan["batch"]["image"], gan["rng"]
  metrics = gan["at"][3][0][1]["metrics"]
  sample_key = jax.random.split(rng)[0]  # the loss's posterior sample

  def recon(p):
    return model.apply({"params": p}, x, sample_key)[0]

  def rec_loss(p):
    return jnp.mean(jnp.abs(recon(p) - x))

  def discriminate(p, images):
    return model.apply({"params": p}, images, method=model.discriminate)

  def gen_loss(p):
    return -jnp.mean(discriminate(p, recon(p)))

  # Brute force: gradients of the whole network, read at the decoder's last conv kernel; and the discriminator's
  # own passes on the images and their reconstructions (one program: op by op they dispatch hundreds of ops).
  grads, logits_real, logits_fake = jax.jit(lambda p: (
      (jax.grad(rec_loss)(p), jax.grad(gen_loss)(p)), discriminate(p, x), discriminate(p, recon(p))))(params)
  norms = [np.linalg.norm(np.asarray(g["decoder"]["conv_out"]["kernel"])) for g in grads]
  expected = 0.5 * np.clip(norms[0] / (norms[1] + 1e-4), 0, 1e4)
  np.testing.assert_allclose(float(metrics["disc_weight"]), expected, rtol=1e-4)
  assert 1e-3 < expected < 1e3  # a real balance, not a clip
  # The hinge loss and the logits of the discriminator's own pass.
  logits_real, logits_fake = np.asarray(logits_real), np.asarray(logits_fake)
  hinge = 0.5 * (np.maximum(0, 1 - logits_real).mean() + np.maximum(0, 1 + logits_fake).mean())
  np.testing.assert_allclose(float(metrics["d_loss"]), hinge, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["g_loss"]), -logits_fake.mean(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose([float(metrics["logits_real"]), float(metrics["logits_fake"])],
                             [logits_real.mean(), logits_fake.mean()], rtol=1e-4, atol=1e-6)


def test_the_adversarial_terms_wait_for_disc_start_and_train_each_side_alone(gan):
  params, batch, loss_fn, rng = gan["params"], gan["batch"], gan["loss_fn"], gan["rng"]
  plain_fn = autoencoder_loss.make_loss_fn(models.build(dict(GAN, disc_layers=0)),
                                           common.section("autoencoder", kl_weight=1e-3))

  def metric_grad(name):  # the gradient of one term of the total, as the loss computed it
    return jax.grad(lambda p: loss_fn(p, batch, rng, None, jnp.int32(3))[1]["metrics"][name])

  # One program: the loss without a discriminator (value and gradient), and the gradients of the two adversarial
  # terms read below.
  ((plain_loss, _), plain_grads), (g_grads, d_grads) = jax.jit(lambda p: (
      jax.value_and_grad(lambda q: plain_fn(q, batch, rng), has_aux=True)(_split(p)[0]),
      (metric_grad("g_loss")(p), metric_grad("d_loss")(p))))(params)

  # Before disc_start: the loss without a discriminator, in value and gradient (to float32 rounding: the two
  # are different programs, which XLA may fuse differently), and exactly nothing from or for the discriminator.
  (loss, aux), grads = gan["at"][2]
  np.testing.assert_allclose(float(loss), float(plain_loss), rtol=1e-6)
  ae_grads, disc_grads = _split(grads)
  flat = [np.concatenate([np.ravel(np.asarray(g)) for g in jax.tree.leaves(tree)]) for tree in (ae_grads, plain_grads)]
  assert np.abs(flat[0] - flat[1]).max() < 1e-5 * np.abs(flat[1]).max()
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(disc_grads))
  assert all(float(aux["metrics"][k]) == 0 for k in autoencoder_loss.GAN_METRICS)

  # From disc_start on, by parts: total = plain + λ·g_loss + d_loss, where g_loss trains the autoencoder alone
  # and d_loss the discriminator alone.
  (loss, aux), grads = gan["at"][3]
  metrics = aux["metrics"]
  weight = float(metrics["disc_weight"])
  np.testing.assert_allclose(float(loss), float(plain_loss) + weight * float(metrics["g_loss"])
                             + float(metrics["d_loss"]), rtol=1e-6)
  g_ae, g_disc = _split(g_grads)
  d_ae, d_disc = _split(d_grads)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_disc))  # the generator term moves no D param
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(d_ae))  # the hinge loss moves no AE param
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(g_ae))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(d_disc))
  ae_grads, disc_grads = _split(grads)
  for total, plain, gen in zip(jax.tree.leaves(ae_grads), jax.tree.leaves(plain_grads), jax.tree.leaves(g_ae)):
    np.testing.assert_allclose(np.asarray(total), np.asarray(plain) + weight * np.asarray(gen), rtol=1e-4, atol=1e-7)
  for total, hinge in zip(jax.tree.leaves(disc_grads), jax.tree.leaves(d_disc)):
    np.testing.assert_allclose(np.asarray(total), np.asarray(hinge), rtol=1e-4, atol=1e-7)


# --- the EMA codebook in the train state --------------------------------------------------------------------------

VQ_EMA = dict(TINY, name="autoencoder_vq", n_embed=8, ema=True, decay=0.9)


def _ema_by_hand(stats, z, decay=0.9, epsilon=1e-5):
  """VectorQuantizer's EMA update in numpy (tests/models/test_autoencoder.py's test_vq_ema_update_by_hand)."""
  book, size, total = (np.asarray(stats[k], np.float64) for k in ("codebook", "cluster_size", "embed_sum"))
  flat = np.asarray(z, np.float64).reshape(-1, book.shape[1])
  nearest = ((flat[:, None] - book[None]) ** 2).sum(-1).argmin(1)
  counts = np.bincount(nearest, minlength=len(book))
  sums = np.zeros_like(book)
  np.add.at(sums, nearest, flat)
  size = decay * size + (1 - decay) * counts
  total = decay * total + (1 - decay) * sums
  n = size.sum()
  book = total / ((size + epsilon) / (n + len(book) * epsilon) * n)[:, None]
  return dict(codebook=book, cluster_size=size, embed_sum=total), counts


@pytest.fixture(scope="module")
def vq_ema():
  """VQ_EMA's model, a batch, a fresh train state (Adam) and the encoder's outputs under its params."""
  model = models.build(VQ_EMA)
  batch = {"image": _renders(4)}
  optimizer = optax.adam(1e-3)
  params, model_state = state_lib.split_variables(model.init(jax.random.PRNGKey(0), batch["image"]))
  state = state_lib.create_train_state(params, optimizer, model_state=model_state)
  z = np.asarray(model.apply({"params": params}, batch["image"], method=model.encode))
  return dict(model=model, batch=batch, optimizer=optimizer, state=state, z=z)


@pytest.mark.parametrize("accum", [1, 2])
def test_one_step_updates_the_ema_codebook_by_hand(vq_ema, accum):
  model, batch, optimizer, state = vq_ema["model"], vq_ema["batch"], vq_ema["optimizer"], vq_ema["state"]
  params, model_state = state.params, state.model_state
  assert set(model_state) == {"vq_stats"} and "quantizer" not in params  # the codebook is not a param
  loss_fn = autoencoder_loss.make_loss_fn(model, common.section("autoencoder"))
  step = jax.jit(step_lib.make_train_step(loss_fn, optimizer, ema_rate=0.9, grad_accum_steps=accum))
  new, metrics = step(state, batch, jax.random.PRNGKey(1))
  assert bool(metrics["finite"]) and float(metrics["codebook"]) == 0.0
  # The encoder's outputs under the step's (old) params, quantised against the old codebook, micro-batch by
  # micro-batch: each one's update is the next one's codebook.
  z = vq_ema["z"]
  stats = model_state["vq_stats"]["quantizer"]
  for part in np.split(z, accum):
    stats, counts = _ema_by_hand(stats, part)
  assert counts.sum() == z[..., 0].size // accum and (counts > 0).sum() >= 2
  got = new.model_state["vq_stats"]["quantizer"]
  for key in ("codebook", "cluster_size", "embed_sum"):
    np.testing.assert_allclose(np.asarray(got[key]), stats[key], rtol=2e-5, atol=1e-6)
  # The optimizer trained the params (and nothing of the codebook: it is in no params-shaped tree).
  assert jax.tree.structure(new.params) == jax.tree.structure(params)
  assert not np.array_equal(np.asarray(new.params["encoder"]["conv_in"]["kernel"]),
                            np.asarray(params["encoder"]["conv_in"]["kernel"]))
  assert jax.tree.structure(new.ema_params) == jax.tree.structure(params) and int(new.step) == 1


@pytest.mark.slow
def test_runlocal_vq_ema_trains_through_the_loop_and_resumes_its_codebook(tmp_path):
  config = load_config("shapes_autoencoder:runlocal,vq")
  config.model.ema = True
  config.model.ch_mult = (1,)  # one level, as TINY: what is checked is the loop's state, not the network
  state = loop.train(config, str(tmp_path))
  assert int(state.step) == 2 and sorted(state.model_state) == ["vq_stats"]
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [m["step"] for m in lines] == [1, 2] and all(m["codebook"] == 0 for m in lines)
  assert {"commitment", "perplexity"} <= set(lines[-1])
  fresh = jax.eval_shape(state_lib.make_init_fn(models.build(config.model), config,
                                                state_lib.make_optimizer(config.optim)))
  assert jax.tree.structure(fresh) == jax.tree.structure(state)
  # The sizes start at 1 (VectorQuantizer's init) and have moved: the loop ran the EMA update.
  assert not np.all(np.asarray(state.model_state["vq_stats"]["quantizer"]["cluster_size"]) == 1.0)
  trained = np.asarray(state.model_state["vq_stats"]["quantizer"]["codebook"])
  # A resumed run restores the collection bit for bit (and has nothing left to train).
  resumed = loop.train(config, str(tmp_path))
  assert int(resumed.step) == 2
  for a, b in zip(jax.tree.leaves(state.model_state), jax.tree.leaves(resumed.model_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A loaded stage's variables carry it beside the (EMA) params, and decode with it.
  stage = stage_lib.load_stage(str(tmp_path))
  model, variables = stage.model, stage.variables
  assert stage.step == 2 and set(variables) == {"params", "vq_stats"}
  np.testing.assert_array_equal(np.asarray(variables["vq_stats"]["quantizer"]["codebook"]), trained)
  # As a latent U-Net's chain runs it; jitted: op by op, the encoder and decoder take seconds to dispatch.
  round_trip = jax.jit(lambda v, x: frozen.decode(
      model, v, frozen.latents(model, v["params"], x)))
  assert round_trip(variables, _renders(2, 16)).shape == (2, 16, 16, 3)
