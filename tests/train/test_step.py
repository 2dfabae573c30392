"""The train step: sharded equals single-device, accumulation, EMA, condition dropout, loss-aware sampling."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from t2i_jax import config_keys
from t2i_jax.diffusion import schedules, timestep_sampling
from t2i_jax.models.unet import UNet
from t2i_jax.train import diffusion_loss, sharding, state as state_lib, step as step_lib

TEXT = flax.core.FrozenDict(vocab_size=32, context_length=6, width=16, layers=1, heads=2, final_ln=True,
                            padding_embedding=True)
# Text (for condition dropout) and U-Net dropout, attending to the text only in the middle block: attention at every
# level would double the compile time of each step and add nothing the tests check. Its time-embedding kernels
# (128 × 128) are large enough to be split by FSDP.
MODEL = UNet(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(),
             num_head_channels=16, learn_sigma=True, text=TEXT, dropout=0.1)


def _diffusion_config(**overrides):
  return config_keys.section("diffusion", **dict(dict(p_uncond=0.2), **overrides))


def _optim_config():
  return ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=2, schedule="constant", total_steps=10,
                                        weight_decay=0.01, b1=0.9, b2=0.99, grad_clip=1.0))


def _batch(n=8):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  tokens = jax.random.randint(k2, (n, 6), 1, 32)
  return dict(image=jax.random.uniform(k1, (n, 8, 8, 3), minval=-1, maxval=1),
              cond=dict(tokens=tokens, token_mask=jnp.arange(6)[None] < (jnp.arange(n)[:, None] % 5 + 1)))


@pytest.fixture(scope="module")
def setup():
  """(train step, its jitted single-device program, state, batch): MODEL with the loss-aware sampler, which the
  step tests share (one compiled init, one compiled single-device step)."""
  schedule = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  loss_fn = diffusion_loss.make_loss_fn(MODEL, schedule, _diffusion_config(timestep_sampler="loss-second-moment"))
  optimizer = state_lib.make_optimizer(_optim_config())
  batch = _batch()
  params = jax.jit(MODEL.init)(jax.random.key(1, impl="rbg"), batch["image"], jnp.zeros((8,), jnp.int32),
                               **batch["cond"])["params"]
  state = state_lib.create_train_state(params, optimizer, schedule.num_timesteps, loss_aware=True)
  train_step = step_lib.make_train_step(loss_fn, optimizer, ema_rate=0.9)
  return train_step, jax.jit(train_step), state, batch


def test_sharded_step_equals_single_device(setup):
  train_step, single, state, batch = setup
  rng = jax.random.PRNGKey(3)
  s1 = state
  for _ in range(2):
    s1, m1 = single(s1, batch, rng)
  for fsdp in (2,):  # a 4×2 mesh: the batch split 8 ways, large params split 2 ways
    mesh = sharding.make_mesh(fsdp)
    assert mesh.size == 8
    s8 = jax.device_put(jax.tree.map(jnp.copy, state), sharding.state_sharding(state, mesh))
    sharded = step_lib.jit_train_step(train_step, s8, mesh)
    global_batch = sharding.shard_batch(jax.device_get(batch), mesh)
    assert len(global_batch["image"].sharding.device_set) == 8
    for _ in range(2):
      s8, m8 = sharded(s8, global_batch, rng)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(m1["loss"]), float(m8["loss"]), rtol=1e-5)
    assert int(s8.step) == 2


def test_fsdp_shards_large_params(setup):
  state = setup[2]
  mesh = sharding.make_mesh(2)
  shardings = sharding.state_sharding(state.params, mesh)
  specs = [s.spec for s in jax.tree.leaves(shardings)]
  assert any("fsdp" in tuple(spec) for spec in specs)
  assert any(tuple(spec) == () for spec in specs)  # biases and norms stay replicated


def test_gradient_accumulation_averages_micro_batches():
  # A loss that ignores the rng, so the two paths see identical examples.
  def loss_fn(params, batch, rng, history, step):
    per_example = jnp.sum((batch["x"] @ params["w"] - batch["y"]) ** 2, axis=-1)
    return jnp.mean(per_example), dict(metrics=dict(loss=jnp.mean(per_example)), t=jnp.zeros_like(per_example,
                                       jnp.int32), per_example_loss=per_example)

  params = {"w": jnp.ones((3, 2))}
  batch = {"x": jax.random.normal(jax.random.PRNGKey(0), (8, 3)), "y": jnp.zeros((8, 2))}
  optimizer = optax.sgd(0.1)
  st = state_lib.create_train_state(params, optimizer)
  # Jitted: op by op, each step dispatches (and compiles) some forty tiny programs.
  full = jax.jit(step_lib.make_train_step(loss_fn, optimizer, grad_accum_steps=1))(st, batch, jax.random.PRNGKey(0))
  accum = jax.jit(step_lib.make_train_step(loss_fn, optimizer, grad_accum_steps=4))(st, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.asarray(full[0].params["w"]), np.asarray(accum[0].params["w"]), rtol=1e-6)
  np.testing.assert_allclose(float(full[1]["loss"]), float(accum[1]["loss"]), rtol=1e-6)


def test_the_step_reaches_the_loss_as_the_states_step():
  # A loss scaled by (1 + step): the metric reads 1× the base loss at step 0 and 4× at step 3.
  def loss_fn(params, batch, rng, history, step):
    loss = jnp.mean((batch["x"] @ params["w"]) ** 2) * (1.0 + step)
    return loss, dict(metrics=dict(loss=loss))

  params = {"w": jnp.ones((3, 2))}
  batch = {"x": jax.random.normal(jax.random.PRNGKey(0), (8, 3))}
  optimizer = optax.sgd(0.0)
  base = float(jnp.mean((batch["x"] @ params["w"]) ** 2))
  for accum in (1, 2):
    st = state_lib.create_train_state(params, optimizer).replace(step=jnp.int32(3))
    step = jax.jit(step_lib.make_train_step(loss_fn, optimizer, grad_accum_steps=accum))  # one program, not forty
    _, metrics = step(st, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(metrics["loss"]), 4.0 * base, rtol=1e-5)


def _tail_config(**overrides):
  return _diffusion_config(**dict(dict(timestep_sampler="logit-normal", logit_mean=0.0, logit_std=0.6,
                                       logit_uniform_fraction=0.05, logit_tail_fraction=0.25), **overrides))


def test_an_early_tail_draws_its_own_weight_until_early_tail_steps(setup):
  schedule = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))
  _, _, state, batch = setup
  params = state.params

  def timesteps(config):  # the loss's draw alone: XLA drops the model's pass, which the draw does not read
    loss_fn = diffusion_loss.make_loss_fn(MODEL, schedule, config)
    return jax.jit(lambda *args: loss_fn(*args)[1]["t"])

  early = timesteps(_tail_config(early_tail_fraction=0.9, early_tail_steps=5))
  at = {h: timesteps(_tail_config(logit_tail_fraction=h)) for h in (0.9, 0.25)}
  rng = jax.random.PRNGKey(7)
  draws = {}
  for step in (0, 4, 5, 100):
    t = np.asarray(early(params, batch, rng, None, jnp.int32(step)))
    draws[step] = t
    expected = at[0.9 if step < 5 else 0.25](params, batch, rng)
    np.testing.assert_array_equal(t, np.asarray(expected))
  # The two weights draw differently on this key (else the check above could not tell them apart).
  assert not np.array_equal(draws[4], draws[5])


def test_a_bad_early_tail_fails_when_the_loss_is_built():
  schedule = schedules.make_schedule(schedules.beta_schedule("cosine", 100))
  with pytest.raises(ValueError, match="early_tail_fraction=0.99 must lie in"):
    diffusion_loss.make_loss_fn(MODEL, schedule, _tail_config(early_tail_fraction=0.99, early_tail_steps=5))
  with pytest.raises(ValueError, match="logit_tail_fraction=0.99 must lie in"):
    diffusion_loss.make_loss_fn(MODEL, schedule, _tail_config(logit_tail_fraction=0.99, early_tail_fraction=0.5,
                                                              early_tail_steps=5))
  with pytest.raises(ValueError, match="timestep_sampler='uniform'"):
    diffusion_loss.make_loss_fn(MODEL, schedule, _diffusion_config(early_tail_fraction=0.5, early_tail_steps=5))
  with pytest.raises(ValueError, match="non-negative int"):
    diffusion_loss.make_loss_fn(MODEL, schedule, _tail_config(early_tail_fraction=0.5, early_tail_steps=-1))
  loss_fn = diffusion_loss.make_loss_fn(MODEL, schedule, _tail_config(early_tail_fraction=0.5, early_tail_steps=5))
  with pytest.raises(ValueError, match="call the loss with the optimizer step"):
    loss_fn(None, _batch(), jax.random.PRNGKey(0))  # refused before the params are read


def test_lr_schedules_warm_up_then_hold_decay_or_cool_down():
  base = dict(lr=1e-3, warmup_steps=10, total_steps=100, cooldown_steps=20, weight_decay=0.0, b1=0.9, b2=0.99,
              grad_clip=1.0)
  steps = np.array([0, 5, 10, 50, 80, 90, 100])
  lrs = {name: np.array([state_lib.make_lr_schedule(ml_collections.ConfigDict(dict(base, schedule=name)))(s)
                         for s in steps]) for name in ("constant", "cosine", "wsd")}
  warm = [0.0, 5e-4, 1e-3]
  np.testing.assert_allclose(lrs["constant"], warm + [1e-3] * 4, rtol=1e-6)
  # Cosine from step 10 to 100: at 50, 40/90 of the way; at 80, 70/90.
  cos = [1e-3 * 0.5 * (1 + np.cos(np.pi * f)) for f in (40 / 90, 70 / 90, 80 / 90, 1.0)]
  np.testing.assert_allclose(lrs["cosine"], warm + cos, rtol=1e-5, atol=1e-9)
  # wsd holds the peak until step 80, then falls linearly to 0 at 100.
  np.testing.assert_allclose(lrs["wsd"], warm + [1e-3, 1e-3, 5e-4, 0.0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("overrides, match", [
    (dict(schedule="linear"), "use 'constant', 'cosine' or 'wsd'"),
    (dict(schedule="cosine", total_steps=0), "total_steps=0 must exceed the warmup"),
    (dict(schedule="wsd", cooldown_steps=0), "cooldown_steps=0 must lie in"),
    (dict(schedule="wsd", cooldown_steps=95), "cooldown_steps=95 must lie in"),
])
def test_bad_lr_schedule_is_refused(overrides, match):
  config = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=10, total_steps=100, cooldown_steps=20))
  config.update(overrides)
  with pytest.raises(ValueError, match=match):
    state_lib.make_lr_schedule(config)


def test_ema_decay_and_update():
  assert float(state_lib.ema_decay(0, 0.9999, True)) == pytest.approx(0.1)
  assert float(state_lib.ema_decay(10**6, 0.9999, True)) == pytest.approx(0.9999)
  assert float(state_lib.ema_decay(0, 0.99, False)) == pytest.approx(0.99)
  out = state_lib.ema_update({"a": jnp.array(1.0)}, {"a": jnp.array(3.0)}, jnp.float32(0.75))
  assert float(out["a"]) == pytest.approx(1.5)


def test_condition_dropout_replaces_only_dropped_rows():
  null = MODEL.null_condition()
  cond = _batch(4)["cond"]
  drop = jnp.array([True, False, True, False])
  out = jax.tree.map(np.asarray, diffusion_loss.drop_condition(cond, null, drop))
  cond = jax.tree.map(np.asarray, cond)
  np.testing.assert_array_equal(out["tokens"][[0, 2]], 0)
  assert not out["token_mask"][[0, 2]].any()
  np.testing.assert_array_equal(out["tokens"][[1, 3]], cond["tokens"][[1, 3]])
  np.testing.assert_array_equal(out["token_mask"][[1, 3]], cond["token_mask"][[1, 3]])
  with pytest.raises(ValueError, match="class_null"):
    UNet(image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=(), num_classes=3).null_condition()


def test_the_step_is_reproducible_and_updates_the_loss_aware_history(setup):
  # rng = fold_in(key, step): the same state and key give bitwise the same update (condition dropout,
  # U-Net dropout and the timestep draw included).
  _, jitted, state, batch = setup
  new_state, metrics = jitted(state, batch, jax.random.PRNGKey(5))
  again, _ = jitted(state, batch, jax.random.PRNGKey(5))
  for x, y in zip(jax.tree.leaves(new_state), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(jnp.sum(new_state.loss_history.counts)) == 8
  assert bool(jnp.isfinite(metrics["loss"]))


def test_training_timesteps_follow_the_configured_sampler():
  # The diffusion section's sampler and its parameters reach the draw that both diffusion losses
  # use (the U-Net's and the prior's); logit-normal keeps no loss history.
  key = jax.random.PRNGKey(4)
  draws = {}
  for name, extra in (("uniform", {}), ("logit-normal", dict(logit_mean=1.5, logit_std=0.3))):
    t, weights = diffusion_loss.sample_training_timesteps(_diffusion_config(timestep_sampler=name, **extra),
                                                          key, 64, 100)
    assert np.all(np.asarray(weights) == 1.0)
    draws[name] = np.asarray(t)
  np.testing.assert_array_equal(draws["uniform"], timestep_sampling.sample_uniform(key, 64, 100)[0])
  # The section's defaults are the sampler's N(0, 1).
  legacy = _diffusion_config(timestep_sampler="logit-normal")
  np.testing.assert_array_equal(diffusion_loss.sample_training_timesteps(legacy, key, 64, 100)[0],
                                timestep_sampling.sample_logit_normal(key, 64, 100)[0])
  np.testing.assert_array_equal(draws["logit-normal"], timestep_sampling.sample_logit_normal(key, 64, 100, 1.5, 0.3)[0])
  mixed = _diffusion_config(timestep_sampler="logit-normal", logit_mean=1.5, logit_std=0.3, logit_uniform_fraction=0.5)
  np.testing.assert_array_equal(diffusion_loss.sample_training_timesteps(mixed, key, 64, 100)[0],
                                timestep_sampling.sample_logit_normal(key, 64, 100, 1.5, 0.3, 0.5)[0])
  tailed = _diffusion_config(timestep_sampler="logit-normal", logit_mean=1.5, logit_std=0.3, logit_uniform_fraction=0.2,
                             logit_tail_fraction=0.4, logit_tail_mean=-2.0, logit_tail_std=0.5)
  tailed_t = np.asarray(diffusion_loss.sample_training_timesteps(tailed, key, 64, 100)[0])
  np.testing.assert_array_equal(tailed_t, timestep_sampling.sample_logit_normal(key, 64, 100, 1.5, 0.3, 0.2, 0.4,
                                                                                 -2.0, 0.5)[0])
  assert np.mean(tailed_t < 30) > 0.2  # the tail's sigmoid(N(−2, 0.5²)) < 0.3; the main component never is
  # sigmoid(1.5 ± 3·0.3) lies in [0.65, 0.92]: every draw is a noisy step, unlike the uniform ones.
  assert draws["logit-normal"].min() >= 65 and draws["logit-normal"].max() <= 92
  assert draws["uniform"].min() < 65


def test_bad_batch_size_and_mesh():
  mesh = sharding.make_mesh(1)
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    sharding.check_batch_size(12, mesh)
  with pytest.raises(ValueError, match="fsdp=3"):
    sharding.make_mesh(3)


def test_decoder_condition_dropout_rates_are_unclips_and_independent():
  # unCLIP's decoder: the CLIP embedding dropped 10% of the time, the caption 50%, independently.
  model = UNet(image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=(), clip_dim=4,
               text=dict(vocab_size=64, context_length=6, width=32, layers=1, heads=2))
  n = 20_000
  cond = {"clip_emb": jnp.ones((n, 4)), "tokens": jnp.full((n, 6), 7, jnp.int32),
          "token_mask": jnp.ones((n, 6), bool)}
  out, drops = diffusion_loss.drop_conditions(cond, model.null_condition(), {"clip_emb": 0.1, "text": 0.5},
                                              jax.random.PRNGKey(0))
  clip_dropped = np.asarray(out["clip_emb"]).sum(1) == 0
  text_dropped = ~np.asarray(out["token_mask"]).any(1)
  np.testing.assert_array_equal(clip_dropped, np.asarray(drops["clip_emb"]))
  np.testing.assert_array_equal(text_dropped, np.asarray(out["tokens"]).sum(1) == 0)
  # Binomial standard errors at n = 20,000: 0.0021 (10%), 0.0035 (50%), 0.0015 (5%).
  assert abs(clip_dropped.mean() - 0.1) < 0.01 and abs(text_dropped.mean() - 0.5) < 0.015
  assert abs((clip_dropped & text_dropped).mean() - 0.05) < 0.007
  kept = ~clip_dropped
  np.testing.assert_array_equal(np.asarray(out["clip_emb"])[kept], 1.0)
