"""CLIP: shapes, the contrastive loss, causality, dtype, remat, noised CLIP, errors.

XLA compiles dominate the runtime on CPU, so the tests share one init and a few
jitted programs, and pass each tower only its own params (which is also how a
guidance function that holds just the image tower calls it). OpenAI's ViT-B/32 parameter count
(151,277,313, clip.default_config()) is checked with its converter in tests/convert/test_published_shapes.py.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.models import clip

SMALL = dict(image_size=16, patch_size=4, vision_width=32, vision_layers=2, vision_heads=2, text_ctx=8,
             vocab_size=64, text_width=32, text_layers=2, text_heads=2, embed_dim=16)
B = 3
EOT = (3, 5, 7)  # end-of-text position of each row


def _model(**overrides):
  config = clip.default_config()
  config.update({**SMALL, **overrides})
  return models.build(config)


def _inputs():
  # Drawn in numpy: eager jax.random calls and index updates compile a program each.
  rng = np.random.default_rng(0)
  images = rng.standard_normal((B, 16, 16, 3), np.float32)
  tokens = rng.integers(1, 60, (B, 8)).astype(np.int32)
  # The end-of-text id is the largest (OpenAI's convention), with zero padding after it.
  for row, eot in enumerate(EOT):
    tokens[row, eot], tokens[row, eot + 1:] = 63, 0
  return jnp.asarray(images), jnp.asarray(tokens)


def _tower(params, name):
  """The variables one tower needs: its own params and the logit scale."""
  return {"params": {name: params["params"][name], "logit_scale": params["params"]["logit_scale"]}}


def _encoders(model):
  image = jax.jit(lambda p, x, t=None: model.apply(_tower(p, "visual"), x, t, method=clip.CLIP.encode_image))
  text = jax.jit(lambda p, toks, eot=None: model.apply(_tower(p, "text"), toks, eot, method=clip.CLIP.encode_text))
  return image, text


F32 = _model()
ENCODE_IMAGE, ENCODE_TEXT = _encoders(F32)


def _random_params(model, *args):
  """Params drawn in numpy at init-like scales: no init program to compile, and nonzero biases.

  LayerNorm scales near 1, biases small, matrices ~ N(0, 1/fan_in), embeddings ~ N(0, 1/width).
  """
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "logit_scale":
      return jnp.float32(np.log(1 / 0.07))
    noise = rng.normal(size=shape).astype(np.float32)
    if name == "scale":
      return jnp.asarray(1 + 0.1 * noise)
    if name == "bias":
      return jnp.asarray(0.1 * noise)
    if name in ("kernel", "proj", "text_projection"):
      return jnp.asarray(noise / np.sqrt(np.prod(shape[:-1])))
    return jnp.asarray(noise / np.sqrt(shape[-1]))

  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, jax.random.PRNGKey(0), *args))


@pytest.fixture(scope="module")
def params():
  return _random_params(F32, *_inputs())


def test_output_shapes_and_init(params):
  images, tokens = _inputs()
  img, txt = ENCODE_IMAGE(params, images), ENCODE_TEXT(params, tokens)
  assert img.shape == (B, 16) and txt.shape == (B, 16) and img.dtype == txt.dtype == jnp.float32
  out = jax.eval_shape(F32.apply, params, images, tokens)
  assert [(x.shape, x.dtype) for x in out] == [((B, 16), jnp.float32), ((B, 16), jnp.float32), ((), jnp.float32)]
  # setup() alone creates logit_scale; the towers' params appear only when they are called.
  init_scale = F32.init(jax.random.PRNGKey(0), method=lambda module: module.logit_scale)["params"]["logit_scale"]
  np.testing.assert_allclose(float(init_scale), np.log(1 / 0.07), rtol=1e-6)
  shapes = jax.tree.map(jnp.shape, params["params"])
  assert shapes["visual"]["conv1"] == {"kernel": (4, 4, 3, 32)}  # no bias
  assert shapes["visual"]["positional_embedding"] == (17, 32)
  assert shapes["visual"]["class_embedding"] == (32,) and shapes["visual"]["proj"] == (32, 16)
  assert shapes["text"]["token_embedding"]["embedding"] == (64, 32)
  assert shapes["text"]["positional_embedding"] == (8, 32) and shapes["text"]["text_projection"] == (32, 16)
  abstract = jax.eval_shape(F32.init, jax.random.PRNGKey(0), images, tokens)
  assert jax.tree.map(jnp.shape, abstract) == jax.tree.map(jnp.shape, params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract))


def _loss_numpy(img, txt, log_scale):
  """Symmetric cross-entropy written out with loops, in float64."""
  img = img / np.linalg.norm(img, axis=1, keepdims=True)
  txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  logits = np.exp(log_scale) * img @ txt.T
  n = len(img)
  rows = [np.log(np.sum(np.exp(logits[i]))) - logits[i, i] for i in range(n)]
  cols = [np.log(np.sum(np.exp(logits[:, j]))) - logits[j, j] for j in range(n)]
  return (np.mean(rows) + np.mean(cols)) / 2


def test_contrastive_loss_by_hand():
  jitted = jax.jit(clip.contrastive_loss, static_argnums=3)
  loss = lambda a, b, s, max_scale=100.0: float(jitted(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                                       s, max_scale))
  # Matching pairs along orthonormal directions, images at arbitrary lengths: cos = I, so each
  # cross-entropy is log(e^s + (n - 1)) - s = log(1 + (n - 1)e^{-s}) with s = 2, n = 4.
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 4)))[0].T  # [4, 6], orthonormal rows
  img = basis * np.array([[0.5], [2.0], [3.0], [7.0]])
  np.testing.assert_allclose(loss(img, basis, np.log(2.0)), np.log(1 + 3 * np.exp(-2.0)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(clip.cosine_similarity(img, basis)), np.ones(4), rtol=1e-6)
  # Unrelated embeddings against the loop reference, and the swap symmetry.
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
  np.testing.assert_allclose(loss(a, b, 1.5), _loss_numpy(a, b, 1.5), rtol=1e-5)
  np.testing.assert_allclose(loss(b, a, 1.5), loss(a, b, 1.5), rtol=1e-6)
  # exp(logit_scale) is clipped at 100 unless asked otherwise.
  np.testing.assert_allclose(loss(a, b, np.log(1000.0)), _loss_numpy(a, b, np.log(100.0)), rtol=1e-5)
  np.testing.assert_allclose(loss(a, b, np.log(1000.0), None), _loss_numpy(a, b, np.log(1000.0)), rtol=1e-5)


def test_text_encoder_is_causal_and_pools_at_eot(params):
  _, tokens = _inputs()
  base = np.asarray(ENCODE_TEXT(params, tokens))
  # Row 0 ends at position 3: tokens after it (still below the end-of-text id) change nothing.
  after = np.asarray(ENCODE_TEXT(params, tokens.at[0, 4:].set(jnp.array([5, 9, 17, 33]))))
  np.testing.assert_allclose(after[0], base[0], rtol=1e-6, atol=1e-6)
  before = np.asarray(ENCODE_TEXT(params, tokens.at[0, 1].set(tokens[0, 1] % 50 + 1)))
  assert np.abs(before[0] - base[0]).max() > 1e-3
  # An explicit eot_index equals argmax pooling; a sequence cut after its end-of-text equals the padded one.
  np.testing.assert_allclose(ENCODE_TEXT(params, tokens, jnp.array(EOT)), base, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ENCODE_TEXT(params, tokens[:, :6])[:2], base[:2], rtol=1e-5, atol=1e-6)


def test_bfloat16_activations_match_float32(params):
  images, tokens = _inputs()
  bf16 = _model(dtype="bfloat16")
  abstract = jax.eval_shape(bf16.init, jax.random.PRNGKey(1), images, tokens)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract))  # params stay float32
  encode_image, encode_text = _encoders(bf16)
  pairs = ((encode_image(params, images), ENCODE_IMAGE(params, images)),
           (encode_text(params, tokens), ENCODE_TEXT(params, tokens)))
  for lo, hi in pairs:
    assert lo.dtype == jnp.float32
    rel = np.linalg.norm(np.asarray(lo) - np.asarray(hi)) / np.linalg.norm(np.asarray(hi))
    assert 0 < rel < 2e-2


def test_remat_gives_the_same_gradients(params):
  images, tokens = _inputs()
  # One block per tower (the shared params less block_1) halves the compile time of the two gradients.
  one_block = jax.tree.map(lambda x: x, params)
  for tower in ("visual", "text"):
    one_block["params"][tower]["transformer"] = {"block_0": params["params"][tower]["transformer"]["block_0"]}

  def grads(model):
    return jax.jit(jax.grad(lambda p: clip.contrastive_loss(*model.apply(p, images, tokens))))(one_block)

  plain = grads(_model(vision_layers=1, text_layers=1))
  remat = grads(_model(vision_layers=1, text_layers=1, remat=True))
  assert float(jnp.abs(plain["params"]["visual"]["transformer"]["block_0"]["c_qkv"]["kernel"]).max()) > 0
  assert float(jnp.abs(plain["params"]["logit_scale"])) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), plain, remat)


def _noised(params, num_timesteps=10):
  """Noised-CLIP params from the plain ones: a random timestep table in place of the class embedding."""
  visual = dict(params["params"]["visual"])
  del visual["class_embedding"]
  visual["timestep_embedding"] = 0.2 * jax.random.normal(jax.random.PRNGKey(2), (num_timesteps, 32))
  return {"params": {**params["params"], "visual": visual}}


def test_timestep_conditioned_image_tower(params):
  model = _model(timestep_conditioned=True, num_timesteps=10)
  images, tokens = _inputs()
  noised = _noised(params)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(1), images, tokens, jnp.array([0, 1, 2]))
  assert jax.tree.map(jnp.shape, abstract) == jax.tree.map(jnp.shape, noised)
  encode_image, _ = _encoders(model)
  same_image = jnp.broadcast_to(images[:1], images.shape)
  emb = np.asarray(encode_image(noised, same_image, jnp.array([0, 4, 9])))
  assert emb.shape == (B, 16)
  assert np.abs(emb[0] - emb[1]).max() > 1e-3 and np.abs(emb[1] - emb[2]).max() > 1e-3
  # GLIDE's mechanism: row t of the table stands in for the class token, and nothing else changes.
  table = noised["params"]["visual"]["timestep_embedding"]
  swapped = {"params": {**params["params"], "visual": {**params["params"]["visual"], "class_embedding": table[4]}}}
  np.testing.assert_allclose(encode_image(noised, images, jnp.array([4, 4, 4])), ENCODE_IMAGE(swapped, images),
                             rtol=1e-5, atol=1e-6)


def test_normalize_images():
  x = jnp.stack([-jnp.ones((2, 2, 3)), jnp.ones((2, 2, 3))])
  out = np.asarray(clip.normalize_images(x))
  mean, std = np.array(clip.IMAGE_MEAN), np.array(clip.IMAGE_STD)
  np.testing.assert_allclose(out[0, 0, 0], -mean / std, rtol=1e-6)
  np.testing.assert_allclose(out[1, 0, 0], (1 - mean) / std, rtol=1e-6)


@pytest.mark.parametrize("overrides, match", [
    (dict(image_size=18), "image_size=18 is not divisible by patch_size=4"),
    (dict(vision_heads=3), "vision_width=32 is not divisible by vision_heads=3"),
    (dict(activation="relu"), "activation='relu' is not supported"),
    (dict(dtype="float16"), "dtype='float16'"),
])
def test_bad_config_raises(overrides, match):
  with pytest.raises(ValueError, match=match):
    _model(**overrides)


def test_unknown_config_field_raises():
  with pytest.raises(ValueError, match="no option.*vision_widht"):
    models.build(ml_collections.ConfigDict({"name": "clip", **SMALL, "vision_widht": 32}))


def test_bad_inputs_raise(params):
  # Eager calls, so that the value checks (token ids, indices, timesteps) see concrete arrays.
  images, tokens = _inputs()
  enc_img = lambda x, t=None, model=F32, p=params: model.apply(p, x, t, method=clip.CLIP.encode_image)
  enc_txt = lambda x, eot=None: F32.apply(params, x, eot, method=clip.CLIP.encode_text)
  with pytest.raises(ValueError, match=r"images are 32×32 but this CLIP was configured for 16×16; resize"):
    enc_img(jnp.zeros((B, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"RGB NHWC \[B, H, W, 3\], got shape \(3, 16, 16, 4\)"):
    enc_img(jnp.zeros((B, 16, 16, 4)))
  with pytest.raises(ValueError, match="looks NCHW; transpose to NHWC"):
    enc_img(jnp.zeros((B, 3, 16, 16)))
  with pytest.raises(ValueError, match="t was given but this image tower is not timestep-conditioned"):
    enc_img(images, jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match="length 9 but the text context is 8; tokenize with max_length=8"):
    enc_txt(jnp.ones((B, 9), jnp.int32))
  with pytest.raises(ValueError, match=r"tokens holds values in \[0, 64\].*vocabulary has 64 ids"):
    enc_txt(tokens.at[0, 0].set(64))
  with pytest.raises(ValueError, match="tokens must be integer ids"):
    enc_txt(tokens.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"eot_index holds values in \[3, 8\]"):
    enc_txt(tokens, jnp.array([3, 5, 8]))
  noised = dict(model=_model(timestep_conditioned=True, num_timesteps=10), p=_noised(params))
  with pytest.raises(ValueError, match="timestep-conditioned \\(noised CLIP\\): pass the integer timesteps"):
    enc_img(images, **noised)
  with pytest.raises(ValueError, match="t must be an integer vector"):
    enc_img(images, jnp.array([0.5, 1.0, 2.0]), **noised)
  with pytest.raises(ValueError, match=r"t holds values in \[0, 10\].*num_timesteps=10"):
    enc_img(images, jnp.array([0, 1, 10]), **noised)


def test_clip_guidance_gradient_matches_finite_differences(params):
  model = _model(timestep_conditioned=True, num_timesteps=10)
  noised = _noised(params)["params"]
  images, tokens = _inputs()
  t = jnp.array([0, 4, 9])
  text_emb = ENCODE_TEXT(params, tokens)
  # Jitted as a sampler calls it (the Partial a pytree argument): op by op the gradient compiles ~150 programs.
  call = jax.jit(lambda grad_fn, x, t: grad_fn(x, t, None))
  grad = np.asarray(call(clip.guidance_grad_fn(model, noised, text_emb, 2.5), images, t))

  # One compiled program for the six evaluations below (op by op, the tower's first call compiles every op).
  encode = jax.jit(lambda x: model.apply({"params": noised}, clip.normalize_images(x), t,
                                         method=clip.CLIP.encode_image))

  def score(x):  # 2.5 · exp(logit_scale) · Σ_rows cos(f(x_t, t), g(c)), by the model's own embeddings
    image_emb = encode(x)
    return 2.5 * float(np.exp(noised["logit_scale"]) * np.sum(np.asarray(clip.cosine_similarity(image_emb, text_emb))))

  rng = np.random.default_rng(0)
  for _ in range(3):
    v = rng.normal(size=images.shape).astype(np.float32)
    h = 1e-2
    numeric = (score(images + h * v) - score(images - h * v)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * v), numeric, rtol=2e-2)
  # Each row's gradient is its own image's: the rows do not mix.
  row = np.asarray(call(clip.guidance_grad_fn(model, noised, text_emb[:1], 2.5), images[:1], t[:1]))
  np.testing.assert_allclose(row, grad[:1], rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="needs a noised CLIP"):
    clip.guidance_grad_fn(F32, params["params"], text_emb, 1.0)
