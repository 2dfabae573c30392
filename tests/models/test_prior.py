"""The unCLIP diffusion prior: sequence structure, masking, null text, precision, remat, training."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.diffusion import guidance, losses, samplers, schedules
from t2i_jax.models import prior as prior_lib

E, WIDTH, LAYERS, HEADS, CTX, D_TEXT = 8, 32, 2, 4, 6, 12
B, L = 3, 5


def _config(**overrides):
  cfg = ml_collections.ConfigDict(dict(name="prior", clip_dim=E, width=WIDTH, layers=LAYERS, heads=HEADS,
                                       text_ctx=CTX, text_dim=D_TEXT, dtype="float32", remat=False))
  cfg.update(overrides)
  return cfg


def _inputs(key=0, batch=B, length=L):
  # Drawn in numpy (returned as jax arrays): eager jax.random calls compile a program per shape.
  rng = np.random.default_rng(key)
  return dict(
      z_t=jnp.asarray(rng.standard_normal((batch, E), np.float32)),
      t=jnp.asarray(np.arange(batch, dtype=np.int32) * 7 + 3),
      text_emb=jnp.asarray(rng.standard_normal((batch, E), np.float32)),
      text_tokens=jnp.asarray(rng.standard_normal((batch, length, D_TEXT), np.float32)),
  )


@pytest.fixture(scope="module")
def model_and_params():
  model = models.build(_config())
  params = _init(model, jax.random.PRNGKey(42), **_inputs())
  return model, params


# Jitted (the module is hashable, so it is a static argument): eager op-by-op dispatch
# of the transformer is several times slower on CPU than compiling it.
@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, **kw):
  return model.apply({"params": params}, **kw)


@functools.partial(jax.jit, static_argnums=0)
def _hidden(model, params, **kw):
  return model.apply({"params": params}, **kw, method=model.hidden_states)


@functools.partial(jax.jit, static_argnums=0)
def _init(model, key, **kw):
  return model.init(key, **kw)["params"]


def _bump(v, seed=5):
  """v plus a random perturbation (a constant shift would vanish in the LayerNorms)."""
  return np.asarray(v) + np.random.default_rng(seed).standard_normal(v.shape, np.float32)


def _changes(a, b, tol=1e-5):
  return np.abs(np.asarray(a) - np.asarray(b)).max() > tol


def test_output_shape_and_dtype(model_and_params):
  model, params = model_and_params
  out = _apply(model, params, **_inputs())
  assert out.shape == (B, E) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  # Fewer tokens than text_ctx is fine; so is a fractional t.
  x = _inputs(length=2)
  assert _apply(model, params, **{**x, "t": x["t"] + 0.5}).shape == (B, E)


@pytest.mark.parametrize("name", ["z_t", "t", "text_emb", "text_tokens_first", "text_tokens_last", "query"])
def test_output_depends_on_every_input(model_and_params, name):
  model, params = model_and_params
  x = _inputs()
  base = _apply(model, params, **x)
  p = params
  if name == "query":
    p = {**params, "query": _bump(params["query"])}
  elif name == "t":
    x = {**x, "t": x["t"] + 40}
  elif name.startswith("text_tokens"):
    idx = 0 if name.endswith("first") else L - 1
    x = {**x, "text_tokens": x["text_tokens"].at[:, idx].add(1.0)}
  else:
    x = {**x, name: x[name] + 1.0}
  out = _apply(model, p, **x)
  assert _changes(out, base), name


def test_causal_structure(model_and_params):
  """Perturbing one position's input changes no earlier position, and does change the later ones."""
  model, params = model_and_params
  x = _inputs()
  hidden = functools.partial(_hidden, model)
  base = hidden(params, **x)
  assert base.shape == (B, L + 4, WIDTH)
  # The query is the last position: nothing before it may move.
  h = hidden({**params, "query": _bump(params["query"])}, **x)
  np.testing.assert_array_equal(np.asarray(h[:, :-1]), np.asarray(base[:, :-1]))
  assert _changes(h[:, -1], base[:, -1])
  # z_t sits at L + 2: the text and embedding positions are unchanged, z_t and the query change.
  h = hidden(params, **{**x, "z_t": x["z_t"] + 1.0})
  np.testing.assert_array_equal(np.asarray(h[:, :L + 2]), np.asarray(base[:, :L + 2]))
  assert _changes(h[:, L + 2], base[:, L + 2]) and _changes(h[:, L + 3], base[:, L + 3])
  # Text token 2: tokens 0 and 1 are unchanged.
  h = hidden(params, **{**x, "text_tokens": x["text_tokens"].at[:, 2].add(1.0)})
  np.testing.assert_array_equal(np.asarray(h[:, :2]), np.asarray(base[:, :2]))
  assert _changes(h[:, 2:], base[:, 2:])


def test_padded_tokens_are_ignored(model_and_params):
  model, params = model_and_params
  x = _inputs()
  # Trailing padding, an all-padding row (only the four trailing tokens are attended), gaps.
  mask = jnp.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]], bool)
  base = _apply(model, params, **x, text_mask=mask)
  noisy = x["text_tokens"] + 100.0 * jax.random.normal(jax.random.PRNGKey(7), x["text_tokens"].shape) * ~mask[..., None]
  np.testing.assert_allclose(_apply(model, params, **{**x, "text_tokens": noisy}, text_mask=mask), base,
                             rtol=0, atol=1e-6)
  # The mask is not a no-op: the same padded values change an unmasked call.
  assert _changes(_apply(model, params, **{**x, "text_tokens": noisy}), _apply(model, params, **x))


def test_null_text(model_and_params):
  model, params = model_and_params
  x = _inputs()
  drop = jnp.array([True, False, True])
  out = _apply(model, params, **x, drop_text=drop)
  # Dropped rows ignore text_emb, text_tokens and text_mask entirely (even NaN inputs).
  y = {**x, "text_emb": jnp.where(drop[:, None], jnp.nan, x["text_emb"]),
       "text_tokens": jnp.where(drop[:, None, None], -3.0, x["text_tokens"])}
  mask = jnp.array([[1, 0, 0, 0, 0]] * B, bool).at[1].set(True)
  out2 = _apply(model, params, **y, text_mask=mask, drop_text=drop)
  np.testing.assert_allclose(out2, out, rtol=0, atol=1e-6)
  # Undropped rows equal the call without drop_text, row by row.
  plain = _apply(model, params, **x)
  np.testing.assert_allclose(out[1], plain[1], rtol=0, atol=1e-6)
  assert _changes(out[0], plain[0]) and _changes(out[2], plain[2])
  # All-False drop_text is the plain call.
  np.testing.assert_allclose(_apply(model, params, **x, drop_text=jnp.zeros(B, bool)), plain, rtol=0, atol=1e-6)


def test_classifier_free_guidance_uses_the_null_path(model_and_params):
  """guidance.classifier_free with null_cond runs exactly the drop_text=True path for the uncond half."""
  model, params = model_and_params
  x = _inputs()
  cond = prior_lib.make_cond(x["text_emb"], x["text_tokens"])
  denoise = prior_lib.make_denoise_fn(model, params)
  assert jax.tree.leaves(denoise)  # params are leaves of the Partial
  call = jax.jit(lambda fn, z, t, c: fn(z, t, c))  # a Partial is a pytree: params go in as arguments
  cond_out = call(denoise, x["z_t"], x["t"], cond)
  np.testing.assert_allclose(cond_out, _apply(model, params, **x), rtol=0, atol=1e-6)
  uncond = _apply(model, params, **x, drop_text=jnp.ones(B, bool))
  w = 3.0
  guided_fn = guidance.classifier_free(denoise, w, prior_lib.null_cond(cond))
  guided = call(guided_fn, x["z_t"], x["t"], cond)
  np.testing.assert_allclose(guided, uncond + w * (cond_out - uncond), rtol=1e-5, atol=1e-5)
  # And the whole thing drives the core's sampler (one jit, params as arguments).
  s = schedules.make_schedule(schedules.beta_schedule("cosine", 20))
  z0 = samplers.sample(guided_fn, s, (B, E),
                       jax.random.PRNGKey(0), method="ddim", mean_type="x0", var_type="fixed_small", cond=cond)
  assert z0.shape == (B, E) and bool(jnp.all(jnp.isfinite(z0)))


def test_bfloat16_matches_float32(model_and_params):
  model, params = model_and_params
  x = _inputs()
  mask = jnp.array([[1, 1, 1, 0, 0]] * B, bool)
  ref = _apply(model, params, **x, text_mask=mask)
  bf16 = models.build(_config(dtype="bfloat16"))
  out = _apply(bf16, params, **x, text_mask=mask)  # same float32 params
  assert out.dtype == jnp.float32
  # bfloat16 keeps 8 mantissa bits (eps 2^-8 ≈ 0.004); a few roundings through 2 blocks.
  err = float(jnp.max(jnp.abs(out - ref))) / float(jnp.max(jnp.abs(ref)))
  assert err < 3e-2, err  # measured ≈ 0.005
  assert float(jnp.max(jnp.abs(out - ref))) > 0  # it really ran in bfloat16


def test_remat_gives_identical_gradients(model_and_params):
  model, params = model_and_params
  remat = models.build(_config(remat=True))
  x = _inputs()
  target = jax.random.normal(jax.random.PRNGKey(3), (B, E))

  def loss(m, p):
    return jnp.mean(jnp.square(m.apply({"params": p}, **x) - target))

  grad = jax.jit(jax.grad(loss, argnums=1), static_argnums=0)
  g0, g1 = grad(model, params), grad(remat, params)
  assert jax.tree.structure(g0) == jax.tree.structure(g1)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_prior_learns_with_x0_loss(model_and_params):
  """Plain-SGD steps on the core's x0-prediction loss fit a tiny fixed dataset."""
  model, params = model_and_params
  num_t, n = 50, 8
  s = schedules.make_schedule(schedules.beta_schedule("cosine", num_t))
  k = jax.random.split(jax.random.PRNGKey(1), 3)
  text_emb = jax.random.normal(k[0], (n, E))
  text_tokens = jax.random.normal(k[1], (n, L, D_TEXT))
  # Image embeddings a fixed function of the text (a random rotation), so text determines z_0.
  image_emb = text_emb @ jnp.linalg.qr(jax.random.normal(k[2], (E, E)))[0]

  def loss_fn(p, key):
    kt, kn = jax.random.split(key)
    t = jax.random.randint(kt, (n,), 0, num_t)
    noise = jax.random.normal(kn, image_emb.shape)
    z_t = s.sqrt_alphas_cumprod[t][:, None] * image_emb + s.sqrt_one_minus_alphas_cumprod[t][:, None] * noise
    out = model.apply({"params": p}, z_t, t, text_emb, text_tokens)
    return jnp.mean(losses.training_losses(s, out, image_emb, z_t, t, noise, mean_type="x0",
                                           var_type="fixed_small", loss_type="mse")["loss"])

  @jax.jit
  def train(p, key):
    eval_key = jax.random.PRNGKey(9)  # the same (t, noise) before and after training

    def step(p, i):
      loss, g = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(key, i))
      return jax.tree.map(lambda a, b: a - 0.05 * b, p, g), loss

    before = loss_fn(p, eval_key)
    p, train_losses = jax.lax.scan(step, p, jnp.arange(100))
    return before, train_losses, loss_fn(p, eval_key)

  before, train_losses, after = train(params, jax.random.PRNGKey(2))
  assert np.all(np.isfinite(np.asarray(train_losses)))
  # Measured: about 2.4 -> 0.02.
  assert float(after) < 0.5 * float(before), (float(before), float(after))


def test_bad_inputs_raise(model_and_params):
  model, params = model_and_params
  x = _inputs()
  with pytest.raises(ValueError, match="text_ctx"):
    _apply(model, params, **{**x, "text_tokens": jnp.zeros((B, CTX + 1, D_TEXT))})
  with pytest.raises(ValueError, match="text_dim"):
    _apply(model, params, **{**x, "text_tokens": jnp.zeros((B, L, D_TEXT + 1))})
  with pytest.raises(ValueError, match="z_t"):
    _apply(model, params, **{**x, "z_t": jnp.zeros((B, E + 1))})
  with pytest.raises(ValueError, match="text_emb"):
    _apply(model, params, **{**x, "text_emb": jnp.zeros((B, E - 1))})
  with pytest.raises(ValueError, match="text_mask"):
    _apply(model, params, **x, text_mask=jnp.ones((B, L + 1), bool))
  with pytest.raises(ValueError, match="drop_text"):
    _apply(model, params, **x, drop_text=jnp.ones((B + 1,), bool))
  with pytest.raises(ValueError, match="divisible"):
    models.build(_config(heads=5)).init(jax.random.PRNGKey(0), **x)
  with pytest.raises(ValueError, match="dtype"):
    models.build(_config(dtype="float16"))
  with pytest.raises(ValueError, match="text_dim"):
    models.build(ml_collections.ConfigDict(dict(name="prior", clip_dim=E, width=WIDTH, layers=1, heads=1,
                                                text_ctx=CTX)))
