"""The ADM U-Net: conditioning paths, precision, remat, bad input.

The released models' parameter counts are checked with their converters, from one trace each, in
tests/convert/test_published_shapes.py (count_params of each config against the published count).
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.models.unet import UNet
from tests.models.util import random_params

@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, args, kwargs):
  # Jitted with the (hashable) module static: op-by-op dispatch of a U-Net is far slower on CPU.
  return model.apply(params, *args, **kwargs)


@functools.partial(jax.jit, static_argnums=0)
def _init(model, key, args, kwargs):
  # Params drawn with the "rbg" generator (seeded from `key`): XLA compiles a U-Net init
  # 2-3x faster than with threefry, as in train.state.make_init_fn.
  return model.init(jax.random.key(jax.random.bits(key, dtype=jnp.uint32), impl="rbg"), *args, **kwargs)


@functools.partial(jax.jit, static_argnums=0)
def _train_apply(model, params, args, kwargs, rng):
  # The training-mode forward pass (dropout on), one program per module.
  return model.apply(params, *args, **kwargs, deterministic=False, rngs={"dropout": rng})


TEXT = flax.core.FrozenDict(vocab_size=64, context_length=8, width=32, layers=1, heads=2, final_ln=True,
                            padding_embedding=True)
TINY = dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
            num_head_channels=16, learn_sigma=True)
# One level at 8×8 with attention: every block kind and conditioning path once, at about half TINY's ops (and
# compile time), for the tests that are not about levels, up- or downsampling.
ONE = dict(TINY, image_size=8, channel_mult=(1,))


def _inputs(model, batch=2, seed=0):
  # Drawn in numpy: an eager jax.random call compiles a program for each new shape.
  args, kwargs = models.example_inputs(model, batch)
  rng = np.random.default_rng(seed)
  normal = lambda shape: rng.standard_normal(shape, np.float32)
  x = normal(args[0].shape)
  t = np.arange(batch, dtype=np.int32) * 37 + 5
  if "y" in kwargs:
    kwargs["y"] = np.arange(batch, dtype=np.int32) % model.num_classes
  if "tokens" in kwargs:
    kwargs["tokens"] = rng.integers(1, TEXT["vocab_size"], kwargs["tokens"].shape, np.int32)
    kwargs["token_mask"] = np.arange(kwargs["tokens"].shape[1])[None] < np.array([[5], [3]])[:batch]
  if "clip_emb" in kwargs:
    kwargs["clip_emb"] = normal(kwargs["clip_emb"].shape)
  if "context" in kwargs:
    kwargs["context"] = normal((batch, 6, model.context_dim))
    kwargs["context_mask"] = np.arange(6)[None].repeat(batch, 0) < 4
  if "pooled" in kwargs:
    kwargs["pooled"] = normal(kwargs["pooled"].shape)
  if "low_res" in kwargs:
    kwargs["low_res"] = normal(kwargs["low_res"].shape)
  if "noise_aug_t" in kwargs:
    kwargs["noise_aug_t"] = np.array([3, 50][:batch], np.int32)
  return (x, t), kwargs


VARIANTS = {
    "plain": dict(),
    "class_null": dict(num_classes=10, class_null=True),
    "glide_text": dict(text=TEXT),
    "unclip": dict(text=TEXT, clip_dim=24),
    "clip_only": dict(clip_dim=24),
    "cross_attention": dict(context_dim=20),
    "super_res": dict(super_res=True, noise_aug_embedding=True),
    "inpaint": dict(inpaint=True),
    "everything": dict(num_classes=10, class_null=True, text=TEXT, clip_dim=24, super_res=True, inpaint=True),
    "updown_no_scale_shift": dict(resblock_updown=True, use_scale_shift_norm=False),
}
TWO_LEVEL = {"updown_no_scale_shift"}  # resblock up/downsampling needs a level to move between


def _variant(name):
  return UNet(**(TINY if name in TWO_LEVEL else ONE), **VARIANTS[name])


@pytest.fixture(scope="module")
def everything_init():
  """(model, args, kwargs, params): the "everything" variant initialised, shared by the init-time checks."""
  model = _variant("everything")
  args, kwargs = _inputs(model)
  return model, args, kwargs, _init(model, jax.random.PRNGKey(1), args, kwargs)


def test_zero_output_at_init(everything_init):
  # The output conv is zero-initialised: a fresh model predicts exactly zero.
  model, args, kwargs, params = everything_init
  out = _apply(model, params, args, kwargs)
  np.testing.assert_array_equal(np.asarray(out), 0.0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes_of_every_conditioning_path(variant):
  # The conditioning tests below apply the same models to the same shapes: their programs are compiled once.
  model = _variant(variant)
  args, kwargs = _inputs(model)
  out = np.asarray(_apply(model, random_params(model, jax.random.PRNGKey(2), *args, **kwargs), args, kwargs))
  size = model.image_size
  assert out.shape == (2, size, size, 6) and out.dtype == np.float32
  assert float(np.std(out)) > 1e-3


def _conditioning_check(model, kwargs_drop, path_params):
  """Dropping the condition changes the output; zeroing `path_params` makes it irrelevant."""
  args, kwargs = _inputs(model)
  params = random_params(model, jax.random.PRNGKey(3), *args, **kwargs)
  dropped = {**kwargs, **kwargs_drop}
  a, b = np.asarray(_apply(model, params, args, kwargs)), np.asarray(_apply(model, params, args, dropped))
  assert np.abs(a - b).max() > 1e-3
  flat = flax.traverse_util.flatten_dict(params["params"])
  cut = {k: (np.zeros(v.shape, v.dtype) if any(k[0] == p for p in path_params) or k[-2:-1] == ("encoder_kv",) else v)
         for k, v in flat.items()}
  cut = {"params": flax.traverse_util.unflatten_dict(cut)}
  a, b = _apply(model, cut, args, kwargs), _apply(model, cut, args, dropped)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_null_label_acts_only_through_the_label_embedding():
  model = UNet(**ONE, num_classes=10, class_null=True)
  _conditioning_check(model, dict(y=jnp.full((2,), 10, jnp.int32)), ["label_emb"])


def test_empty_text_acts_only_through_the_text_path():
  model = UNet(**ONE, text=TEXT)
  empty = dict(tokens=jnp.zeros((2, 8), jnp.int32), token_mask=jnp.zeros((2, 8), bool))
  _conditioning_check(model, empty, ["text_proj"])


def test_zero_clip_embedding_acts_only_through_the_clip_path():
  model = UNet(**ONE, clip_dim=24)
  _conditioning_check(model, dict(clip_emb=jnp.zeros((2, 24))), ["clip_proj", "clip_tokens_proj"])


def test_zero_pooled_embedding_acts_only_through_its_projection():
  model = UNet(**ONE, context_dim=20, pooled_dim=12)
  _conditioning_check(model, dict(pooled=jnp.zeros((2, 12))), ["pooled_proj"])
  assert model.null_condition(2)["pooled"].shape == (2, 12)


def test_cross_attention_respects_the_context_mask():
  model = UNet(**ONE, context_dim=20)
  args, kwargs = _inputs(model)
  params = random_params(model, jax.random.PRNGKey(3), *args, **kwargs)
  context = np.asarray(kwargs["context"])
  changed = context.copy()
  changed[:, 4:] += 5.0  # only masked-out tokens change
  a = np.asarray(_apply(model, params, args, kwargs))
  b = np.asarray(_apply(model, params, args, {**kwargs, "context": changed}))
  np.testing.assert_allclose(a, b, atol=1e-6)
  changed = context.copy()
  changed[:, 0] += 5.0
  c = np.asarray(_apply(model, params, args, {**kwargs, "context": changed}))
  assert np.abs(a - c).max() > 1e-3


def test_bfloat16_activations_agree_with_float32():
  model32 = UNet(**ONE, text=TEXT, clip_dim=24)
  model16 = UNet(**ONE, text=TEXT, clip_dim=24, dtype=jnp.bfloat16)
  args, kwargs = _inputs(model32)
  params = random_params(model32, jax.random.PRNGKey(4), *args, **kwargs)
  shapes16 = jax.eval_shape(lambda: model16.init(jax.random.PRNGKey(1), *args, **kwargs))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes16))
  a = np.asarray(_apply(model32, params, args, kwargs))
  b = np.asarray(_apply(model16, params, args, kwargs))
  assert b.dtype == np.float32
  rel = np.linalg.norm(a - b) / np.linalg.norm(a)
  assert rel < 3e-2, rel  # bfloat16 keeps 8 bits of mantissa (~4e-3 per op)
  assert rel > 0  # it did run in bfloat16


def test_remat_gives_the_same_gradients():
  plain = UNet(**ONE, text=TEXT, dropout=0.0)
  remat = UNet(**ONE, text=TEXT, dropout=0.0, remat=True)
  args, kwargs = _inputs(plain)
  params = random_params(plain, jax.random.PRNGKey(5), *args, **kwargs)
  remat_shapes = jax.eval_shape(lambda: remat.init(jax.random.PRNGKey(1), *args, **kwargs))
  assert jax.tree.structure(params) == jax.tree.structure(remat_shapes)
  loss = lambda m: lambda p: jnp.mean(_apply(m, p, args, kwargs) ** 2)
  g1, g2 = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_dropout_is_active_only_when_not_deterministic():
  model = UNet(**ONE, dropout=0.5)
  args, kwargs = _inputs(model)
  params = random_params(model, jax.random.PRNGKey(6), *args, **kwargs)
  a = np.asarray(_apply(model, params, args, kwargs))
  np.testing.assert_array_equal(a, np.asarray(_apply(model, params, args, kwargs)))
  b = np.asarray(_train_apply(model, params, args, kwargs, jax.random.PRNGKey(0)))
  assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize(
    "fields, call_kwargs, match",
    [
        (dict(image_size=20, channel_mult=(1, 2, 2, 2)), {}, "cannot be halved"),
        (dict(attention_resolutions=(4,)), {}, "never occur"),
        (dict(text=TEXT), dict(tokens=jnp.zeros((1, 9), jnp.int32), token_mask=jnp.ones((1, 9), bool)),
         "context is 8"),
        (dict(), dict(x=jnp.zeros((1, 16, 16, 4))), "expects"),
        (dict(num_classes=10), dict(y=None), "conditioned on y"),
        (dict(), dict(y=jnp.zeros((1,), jnp.int32)), "no y conditioning"),
        (dict(clip_dim=24), dict(clip_emb=jnp.zeros((1, 16))), "clip_dim=24"),
    ],
)
def test_bad_input_raises(fields, call_kwargs, match):
  model = UNet(**{**TINY, **fields})
  if model.image_size % 4 == 0 and "cannot be halved" not in match:
    args, kwargs = models.example_inputs(model, 1)
  else:
    args, kwargs = (jnp.zeros((1, model.image_size, model.image_size, 3)), jnp.zeros((1,), jnp.int32)), {}
  if "x" in call_kwargs:
    args = (call_kwargs.pop("x"), args[1])
  kwargs.update(call_kwargs)
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  with pytest.raises(ValueError, match=match):
    _init(model, jax.random.PRNGKey(0), args, kwargs)


def test_build_rejects_unknown_names_and_options():
  with pytest.raises(ValueError, match="'unet'"):
    models.build(dict(name="resnet"))
  with pytest.raises(ValueError, match="no option"):
    models.build(dict(name="unet", image_size=16, model_channels=8, num_res_blocks=1, attention_resolutions=(),
                      channels=3))
  with pytest.raises(ValueError, match="dtype"):
    models.build(dict(name="unet", image_size=16, model_channels=8, num_res_blocks=1, attention_resolutions=(),
                      dtype="float16"))


def test_patch_stem_round_trips_and_keeps_the_image_shape():
  from t2i_jax.models import unet as unet_lib

  x = np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32)
  patches = np.asarray(jax.jit(unet_lib.space_to_depth, static_argnums=1)(x, 2))
  assert patches.shape == (2, 4, 4, 12)
  np.testing.assert_array_equal(patches[0, 1, 2, :3], x[0, 2, 4])  # patch (1, 2), pixel (0, 0)
  np.testing.assert_array_equal(patches[0, 1, 2, 9:], x[0, 3, 5])  # pixel (1, 1)
  np.testing.assert_array_equal(np.asarray(jax.jit(unet_lib.depth_to_space, static_argnums=1)(patches, 2)), x)
  # The shapes through a whole patch U-Net: traced, not compiled.
  model = UNet(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(),
               num_head_channels=16, learn_sigma=True, patch_size=2)
  x, t = jnp.zeros((2, 16, 16, 3)), jnp.zeros((2,), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
  assert jax.eval_shape(model.apply, variables, x, t).shape == (2, 16, 16, 6)
  with pytest.raises(ValueError, match="patch_size=3"):
    jax.eval_shape(UNet(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(),
                        patch_size=3).init, jax.random.PRNGKey(0), x, t)


def test_label_and_token_embeddings_start_at_unit_scale_and_mean_pooling_ignores_padding(everything_init):
  # torch.nn.Embedding's N(0, 1), as ADM and GLIDE initialise them: with Flax's default
  # (std 1/sqrt(width)) a label barely reaches the network for hundreds of steps.
  from t2i_jax.models.text_encoder import GlideTextEncoder

  params = everything_init[-1]["params"]
  assert params["label_emb"]["embedding"].shape == (11, 128)
  assert float(np.std(params["label_emb"]["embedding"])) == pytest.approx(1.0, rel=0.1)
  encoder = GlideTextEncoder(vocab_size=50, context_length=6, width=64, layers=1, heads=2, pool="mean")
  tokens = np.array([[3, 4, 5, 0, 0, 0]])
  mask = tokens > 0
  variables = jax.tree.map(np.asarray, _init(encoder, jax.random.PRNGKey(1), (tokens, mask), {}))
  p = variables["params"]
  assert float(np.std(p["token_embedding"]["embedding"])) == pytest.approx(1.0, rel=0.1)
  states, pooled = map(np.asarray, _apply(encoder, variables, (tokens, mask), {}))
  np.testing.assert_allclose(pooled[0], states[0, :3].mean(0), rtol=1e-5, atol=1e-6)
  # "bow": the real tokens' input embeddings (token + position), before the transformer, summed over
  # sqrt(3): unit scale like one embedding, so one word's swap is not diluted by the caption's length.
  bow = GlideTextEncoder(vocab_size=50, context_length=6, width=64, layers=1, heads=2, pool="bow")
  _, pooled = _apply(bow, variables, (tokens, mask), {})
  inputs = p["token_embedding"]["embedding"][tokens[0, :3]] + p["positional_embedding"][:3]
  np.testing.assert_allclose(np.asarray(pooled[0]), inputs.sum(0) / np.sqrt(3), rtol=1e-5, atol=1e-6)
  # "none": no pooled vector (zeros); the caption reaches a U-Net only through its attention layers.
  states_none, pooled = _apply(encoder.clone(pool="none"), variables, (tokens, mask), {})
  np.testing.assert_array_equal(np.asarray(states_none), states)
  np.testing.assert_array_equal(np.asarray(pooled), np.zeros((1, 64)))
  with pytest.raises(ValueError, match="pool='max'"):
    jax.eval_shape(GlideTextEncoder(vocab_size=50, context_length=6, width=64, layers=1, heads=2, pool="max").init,
                   jax.random.PRNGKey(1), tokens, mask)


@pytest.mark.parametrize("pool, caption_matters", [("mean", True), ("none", False)])
def test_pool_none_leaves_the_caption_to_the_attention_layers(pool, caption_matters):
  # With the tokens' keys/values zeroed the pooled vector is a text U-Net's only way to the caption: two
  # captions give different outputs with "mean" and identical ones with "none".
  from t2i_jax.eval.attribute_probe import without_token_keys_values

  model = UNet(**ONE, text=flax.core.FrozenDict(TEXT, pool=pool))
  x, t = jnp.ones((2, 8, 8, 3)), jnp.full((2,), 500, jnp.int32)
  cond = dict(tokens=jnp.array([[3, 4, 5, 0, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0, 0, 0]]))
  cond["token_mask"] = cond["tokens"] > 0
  params = without_token_keys_values(random_params(model, jax.random.PRNGKey(0), x, t, **cond))
  out = np.asarray(_apply(model, params, (x, t), cond))
  assert (np.abs(out[0] - out[1]).max() > 1e-3) == caption_matters, np.abs(out[0] - out[1]).max()


@pytest.mark.parametrize("pool, dropout_matters", [("mean", True), ("none", False)])
def test_pool_dropout_acts_only_on_a_pooled_vector(pool, dropout_matters):
  # In training mode pool_dropout zeroes the pooled vector of some examples: it changes a "mean" U-Net's
  # output and leaves a "none" U-Net's (its pooled vector is already zero, and the U-Net draws no other
  # "dropout" rng at dropout 0), which is why shapes :full could drop pool_dropout=0.5 with pool="none".
  x, t = jnp.ones((4, 8, 8, 3)), jnp.full((4,), 500, jnp.int32)
  cond = dict(tokens=jnp.array([[3, 4, 5, 0, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0, 0, 0]] * 2))
  cond["token_mask"] = cond["tokens"] > 0
  outs = []
  for pool_dropout in (0.0, 0.5):
    model = UNet(**ONE, text=flax.core.FrozenDict(TEXT, pool=pool, pool_dropout=pool_dropout))
    params = random_params(model, jax.random.PRNGKey(0), x, t, **cond)
    outs.append(np.asarray(_train_apply(model, params, (x, t), cond, jax.random.PRNGKey(1))))
  assert (np.abs(outs[0] - outs[1]).max() > 1e-4) == dropout_matters, np.abs(outs[0] - outs[1]).max()


def test_text_encoder_reads_word_order_from_its_first_step():
  # "a red circle left of a blue square" and "a blue circle left of a red square" hold the same words;
  # only positions tell them apart. Positions start at the tokens' unit scale: at init the encoder's
  # states already differ by a large fraction between the two orders (with CLIP's 0.01 positions they
  # differed by ~1%, and the shapes U-Net never learned which object is which). The bag of words is
  # order-free by design (a sum over the caption's words and over its positions).
  from t2i_jax.models.text_encoder import GlideTextEncoder

  encoder = GlideTextEncoder(vocab_size=50, context_length=8, width=64, layers=2, heads=2, pool="bow")
  tokens = np.array([[3, 4, 5, 6, 7, 8, 0, 0], [7, 4, 5, 6, 3, 8, 0, 0]])  # words 3 and 7 swapped
  mask = tokens > 0

  def order_effect(encoder):
    variables = _init(encoder, jax.random.PRNGKey(0), (tokens, mask), {})
    states, bag = map(np.asarray, _apply(encoder, variables, (tokens, mask), {}))
    np.testing.assert_allclose(bag[0], bag[1], rtol=1e-5, atol=1e-5)
    # The state of word 3 at position 0 against word 3 at position 4, and the mean over the caption.
    same_word = float(np.linalg.norm(states[0, 0] - states[1, 4]) / np.linalg.norm(states[0, 0]))
    mean = states[:, :6].mean(1)
    caption = float(np.linalg.norm(mean[0] - mean[1]) / np.linalg.norm(mean[0]))
    return float(np.std(variables["params"]["positional_embedding"])), same_word, caption

  position_std, same_word, caption = order_effect(encoder)
  assert position_std == pytest.approx(1.0, rel=0.1)
  assert same_word > 0.5 and caption > 0.1, (same_word, caption)
  # position_init_std=0.01 (the 10-minute shapes default's, kept for its one-object prompts): ~1%.
  _, same_word, caption = order_effect(encoder.clone(position_init_std=0.01))
  assert same_word < 0.03 and caption < 0.01, (same_word, caption)


@pytest.mark.slow
def test_pool_dropout_zeroes_whole_pooled_vectors_in_training_only():
  from t2i_jax.models.text_encoder import GlideTextEncoder

  encoder = GlideTextEncoder(vocab_size=50, context_length=6, width=32, layers=1, heads=2, pool="bow",
                             pool_dropout=0.5)
  tokens = np.tile(np.array([[3, 4, 5, 0, 0, 0]]), (64, 1))
  mask = tokens > 0
  variables = _init(encoder, jax.random.PRNGKey(0), (tokens, mask), {})
  states, pooled = _apply(encoder, variables, (tokens, mask), {})
  train_states, dropped = _train_apply(encoder, variables, (tokens, mask), {}, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(train_states), np.asarray(states))  # the tokens' path is untouched
  zero = np.all(np.asarray(dropped) == 0, axis=1)
  kept = np.all(np.isclose(np.asarray(dropped), np.asarray(pooled)), axis=1)
  assert np.all(zero | kept) and 16 < zero.sum() < 48, zero.sum()  # whole vectors, about half, not rescaled
  # The U-Net hands its `deterministic` to the encoder: in training its output moves, at sampling not.
  model = UNet(**ONE, text=flax.core.FrozenDict(TEXT, pool="bow", pool_dropout=0.5))
  x, t = jnp.ones((64, 8, 8, 3)), jnp.full((64,), 500, jnp.int32)
  cond = dict(tokens=np.tile(np.array([[3, 4, 5, 0, 0, 0, 0, 0]]), (64, 1)))
  cond["token_mask"] = cond["tokens"] > 0
  unet_params = random_params(model, jax.random.PRNGKey(2), x, t, **cond)
  sampled = _apply(model, unet_params, (x, t), cond)
  trained = _train_apply(model, unet_params, (x, t), cond, jax.random.PRNGKey(3))
  moved = np.any(np.asarray(trained) != np.asarray(sampled), axis=(1, 2, 3))
  assert 16 < moved.sum() < 48, moved.sum()  # the examples whose pooled caption was dropped
  with pytest.raises(ValueError, match="pool_dropout=1.0 must be in"):
    bad = GlideTextEncoder(vocab_size=50, context_length=6, width=32, layers=1, heads=2, pool_dropout=1.0)
    jax.eval_shape(bad.init, jax.random.PRNGKey(0), tokens, mask)


def test_coord_channels_give_the_network_each_pixels_position():
  # CoordConv: a U-Net is translation-equivariant up to its zero padding, so it cannot tell "top left"
  # from "center" by what it sees; two input channels with the pixel's (x, y) let it.
  from t2i_jax.models import unet as unet_lib

  coords = np.asarray(jax.jit(unet_lib.pixel_coordinates, static_argnums=(0, 1))(4, 8))
  assert coords.shape == (4, 8, 2)
  np.testing.assert_allclose(coords[0, 0], [-7 / 8, -3 / 4])  # x, y of the top-left pixel centre
  np.testing.assert_allclose(coords[3, 7], [7 / 8, 3 / 4])
  np.testing.assert_allclose(coords[2, 5], [3 / 8, 1 / 4])
  model = UNet(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(),
               num_head_channels=16, patch_size=2, coord_channels=True)
  x = np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32)
  assembled = np.asarray(jax.jit(lambda x: model._assemble_input(x, None, None, None))(x))
  assert assembled.shape == (2, 8, 8, 5) and model.input_channels == 5
  np.testing.assert_array_equal(assembled[..., :3], x)
  centres = (np.arange(8) + 0.5) / 8 * 2 - 1  # the same grid as above, 8×8: (x, y) of each pixel
  np.testing.assert_allclose(assembled[1, ..., 3:], np.stack(np.meshgrid(centres, centres, indexing="xy"), -1))
  t = jnp.zeros((2,), jnp.int32)
  params = random_params(model, jax.random.PRNGKey(1), x, t)
  assert params["params"]["input_conv"]["kernel"].shape == (3, 3, 4 * 5, 32)  # 2×2 patches of 5 channels
  out = np.asarray(_apply(model, params, (x, t), {}))
  assert out.shape == (2, 8, 8, 3) and np.all(np.isfinite(out))
  # The coordinate weights matter: zeroing them changes the output.
  kernel = np.array(params["params"]["input_conv"]["kernel"]).reshape(3, 3, 4, 5, 32)
  kernel[:, :, :, 3:] = 0
  no_coords = jax.tree.map(lambda a: a, params)
  no_coords["params"]["input_conv"]["kernel"] = kernel.reshape(3, 3, 4 * 5, 32)
  assert np.abs(np.asarray(_apply(model, no_coords, (x, t), {})) - out).max() > 1e-3


def test_attention_position_embedding_moves_only_the_queries_and_keys():
  # Self-attention is permutation-equivariant: a spatially constant input gives the same output at every
  # place. The learned table on the queries and keys lets a place (and a word's key) tell places apart.
  from t2i_jax.models import layers

  b, hgt, wid, c, heads = 2, 3, 4, 32, 2
  rng = np.random.default_rng(0)
  x = np.broadcast_to(rng.standard_normal((b, 1, 1, c), np.float32), (b, hgt, wid, c))
  context = rng.standard_normal((b, 5, 16), np.float32)
  plain, placed = layers.AttentionBlock(heads), layers.AttentionBlock(heads, position_embedding=True)
  params = random_params(placed, jax.random.PRNGKey(2), x, context, scale=0.5)
  table = np.asarray(params["params"]["position_embedding"])
  assert table.shape == (hgt * wid, 2, c)
  init_table = _init(placed, jax.random.PRNGKey(3), (x, context), {})["params"]["position_embedding"]
  assert 0.8 < float(np.std(init_table)) < 1.2  # unit scale, like q and k at init
  without = {"params": {k: v for k, v in params["params"].items() if k != "position_embedding"}}
  out_plain = np.asarray(_apply(plain, without, (x, context), {}))
  np.testing.assert_allclose(out_plain, out_plain[:, :1, :1].repeat(hgt, 1).repeat(wid, 2), atol=1e-5)
  out = np.asarray(_apply(placed, params, (x, context), {}))
  assert np.std(out.reshape(b, hgt * wid, c), axis=1).min() > 1e-3  # places now differ
  # A zero table is the plain block.
  zeroed = jax.tree.map(lambda a: a, params)
  zeroed["params"]["position_embedding"] = np.zeros_like(table)
  np.testing.assert_allclose(np.asarray(_apply(placed, zeroed, (x, context), {})), out_plain, atol=1e-6)
  # By hand: the table's first half joins the queries, its second half the keys, the values stay as they were.
  p = jax.tree.map(np.asarray, params["params"])
  h = np.asarray(_apply(layers.GroupNorm32(), {"params": params["params"]["norm"]}, (x,), {})).reshape(b, hgt * wid, c)
  qkv = (h @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(b, hgt * wid, heads, 3, c // heads)
  q = qkv[:, :, :, 0] + table[:, 0].reshape(1, hgt * wid, heads, -1)
  k = qkv[:, :, :, 1] + table[:, 1].reshape(1, hgt * wid, heads, -1)
  kv = (context @ p["encoder_kv"]["kernel"] + p["encoder_kv"]["bias"]).reshape(b, 5, heads, 2, -1)
  k, v = np.concatenate([kv[:, :, :, 0], k], 1), np.concatenate([kv[:, :, :, 1], qkv[:, :, :, 2]], 1)
  logits = np.einsum("blhd,bshd->bhls", q, k) / np.sqrt(c // heads)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  att = np.einsum("bhls,bshd->blhd", weights, v).reshape(b, hgt * wid, c)
  expected = x + (att @ p["proj_out"]["kernel"] + p["proj_out"]["bias"]).reshape(b, hgt, wid, c)
  np.testing.assert_allclose(out, expected, atol=1e-4)
  # The U-Net's flag reaches every attention layer, each with a table for its own feature map.
  fields = dict(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(4, 2),
                num_head_channels=16, patch_size=2)
  x8, t = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32)
  for flag in (False, True):
    abstract = jax.eval_shape(lambda: UNet(**fields, attention_position_embedding=flag).init(jax.random.PRNGKey(0), x8, t))
    attention = {k: v for k, v in abstract["params"].items() if "attn" in k}
    assert len(attention) == 7  # one per down level, the middle, two per up level
    tables = {k: v["position_embedding"].shape for k, v in attention.items() if "position_embedding" in v}
    if not flag:
      assert tables == {}
    else:
      channels = {k: v["qkv"]["kernel"].shape[0] for k, v in attention.items()}
      sides = {k: 4 if k.startswith(("down_0", "up_0")) else 2 for k in attention}
      assert tables == {k: (sides[k] ** 2, 2, channels[k]) for k in attention}
