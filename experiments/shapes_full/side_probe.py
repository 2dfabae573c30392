"""Which part of the text path can tell which side of a two-object caption's relation each object is on?

For two-object training captions with two different colours, the label is whether the object whose
colour is named first sits left of (or above) the other. A logistic regression (2,000 captions,
L2 1e-3, 2,000 full-batch steps) is fitted on the text encoder's pooled vector (what the U-Net's
timestep embedding receives) and on all its token states flattened, and scored on 1,000 others.
`random` replaces the trained encoder by a fresh initialisation of the same config.
A third read-out asks what an attention key would need: from the state of one colour word alone, is
*that* colour's object left of / above the other (both colour words of each caption, so the base rate
is 1/2). Unlike the caption-level label, this one is an exclusive-or of the word's place in the
sentence and the relation, so no single word decides it.

`places` asks the same of the U-Net's task at pure noise without the layout's blur: regress the colour of
the left/top and of the right/bottom object from the caption, through two place queries attending to
the token states (the U-Net's attention with its position table) or through the pooled vector and an
MLP (its timestep-embedding path); optionally starting from a run's trained encoder. `image` regresses
the whole 24 × 24 render (the layout's blur included) through a 6 × 6 grid of places with the U-Net's
attention and position table, and scores whether each prediction is nearer its scene than the same
scene with the objects' sides exchanged; its parts (`pooled`, `resblocks`, ...) add the U-Net's pieces back.
`unet` fits the same target with attempt 15's `:full` U-Net itself at t = 990 on an input of zeros or of noise,
with parts changed or taken away (`one-level`, `nopool`, `noss`, ...): which of its pieces keeps the side
from being learned.

`supervised` asks whether the encoder could learn the side if it were told: a fresh encoder of attempt
15's `:full` config, its pooled vector into a two-layer MLP, trained with Adam 1e-3 on batches of 64 of
10,000 captions to predict the label, and scored on 2,000 others.

  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py runs/full13 16000 [random]
  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py supervised
  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py places attention|pooled [runs/full16@16000]
  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py image 16|64 [pooled resblocks coords ...]
  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py unet zeros|noise [one-level nopool ...] [steps=2000]
"""

import dataclasses
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t2i_jax import models
from t2i_jax.data import captions, shapes, tokenizer as tokenizer_lib
from t2i_jax.models import layers, unet
from t2i_jax.models.text_encoder import GlideTextEncoder
from t2i_jax.pipelines import stage as stage_lib


def two_colour_scenes(num: int):
  """The first `num` two-object training scenes whose objects differ in colour, as (scene, caption, axis):
  axis 0 (x) for left/right, 1 (y, downwards) for above/below."""
  index = 0
  for _ in range(num):
    while True:
      scene, caption = shapes.sample_scene("train", 0, index)
      index += 1
      if len(scene.objects) == 2 and scene.objects[0].color != scene.objects[1].color:
        break
    yield scene, caption, 0 if scene.relation in (0, 1) else 1


def side_examples(num: int):
  """(captions, labels): label 1 where the first-named colour's object is left of / above the other."""
  texts, labels = [], []
  for scene, caption, axis in two_colour_scenes(num):
    a, b = scene.objects
    first, other = (a, b) if caption.find(captions.COLORS[a.color]) < caption.find(captions.COLORS[b.color]) else (b, a)
    texts.append(caption)
    labels.append(float(first.center[axis] < other.center[axis]))
  return texts, np.asarray(labels)


def colour_token_rows(texts, labels, tokens: np.ndarray, tokenizer) -> np.ndarray:
  """[2·N, 3] rows (caption, token position, label) for both colour words of each caption; the label is 1
  where that word's object is left of / above the other (the first-named colour's label is the caption's,
  the second's its complement)."""
  colour_ids = {int(tokenizer_lib.tokenize(tokenizer, [c], 4)[0][0, 0]): c for c in captions.COLORS}
  rows = []
  for i, text in enumerate(texts):
    found = [(j, colour_ids[int(t)]) for j, t in enumerate(tokens[i]) if int(t) in colour_ids]
    assert len(found) == 2, text  # side_examples keeps captions with two different colours
    for rank, (j, _) in enumerate(found):
      rows.append((i, j, labels[i] if rank == 0 else 1.0 - labels[i]))
  return np.asarray(rows)


def linear_accuracy(features: np.ndarray, labels: np.ndarray, num_train: int = 2000) -> tuple:
  """(train, held-out) accuracy of an L2-regularised logistic regression on standardised features."""
  x = (features - features[:num_train].mean(0)) / (features[:num_train].std(0) + 1e-6)

  def loss(p, x, y):
    z = x @ p[0] + p[1]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 1e-3 * jnp.sum(p[0] ** 2)

  grad = jax.jit(jax.grad(loss))
  p = (jnp.zeros(x.shape[1]), jnp.zeros(()))
  for _ in range(2000):
    g = grad(p, x[:num_train], labels[:num_train])
    p = (p[0] - 0.1 * g[0], p[1] - 0.1 * g[1])
  hits = ((x @ np.asarray(p[0]) + float(p[1])) > 0) == labels
  return float(hits[:num_train].mean()), float(hits[num_train:].mean())


def main(workdir: str, step: int, random_encoder: bool = False) -> None:
  stage = stage_lib.load_stage(workdir, step=step, use_ema=True)
  config, params = stage.config, stage.params
  encoder = GlideTextEncoder(**config.model.text)
  length = config.data.context_length
  text_params = params["text_encoder"]
  if random_encoder:
    text_params = encoder.init(jax.random.PRNGKey(1), jnp.zeros((1, length), jnp.int32),
                               jnp.ones((1, length), bool))["params"]
  texts, labels = side_examples(3000)
  cond = stage.text_cond(texts)
  states, pooled = jax.jit(lambda t, m: encoder.apply({"params": text_params}, t, m))(
      jnp.asarray(cond["tokens"]), jnp.asarray(cond["token_mask"]))
  print(f"{workdir} step {step}, {'random' if random_encoder else 'trained'} encoder; label base rate "
        f"{labels.mean():.3f}")
  for name, features in (("pooled", np.asarray(pooled)), ("token states", np.asarray(states).reshape(len(texts), -1))):
    train, heldout = linear_accuracy(features, labels)
    print(f"  {name}: train {train:.3f}, held-out {heldout:.3f}")
  # Rows come caption by caption, so the first 4,000 (2,000 captions) train and the rest are held out.
  rows = colour_token_rows(texts, labels, cond["tokens"], stage.tokenizer)
  word_states = np.asarray(states)[rows[:, 0].astype(int), rows[:, 1].astype(int)]
  train, heldout = linear_accuracy(word_states, rows[:, 2], num_train=4000)
  print(f"  one colour word's state, its own object's side: train {train:.3f}, held-out {heldout:.3f}")


class SideClassifier(nn.Module):
  """Caption tokens [B, L] -> side logit [B]: the text encoder's pooled vector through a two-layer MLP."""
  text: dict

  @nn.compact
  def __call__(self, tokens, mask):
    _, pooled = GlideTextEncoder(**self.text)(tokens, mask)
    return nn.Dense(1)(nn.silu(nn.Dense(256)(nn.silu(nn.Dense(256)(pooled)))))[:, 0]


class PlaceColours(nn.Module):
  """Caption tokens [B, L] -> RGB of the left/top and the right/bottom object [B, 6], the U-Net's two text
  paths in miniature: "attention" (two learned place queries attend to the token states, as the U-Net's
  places do through its position table) or "pooled" (the pooled vector through an MLP)."""
  text: dict
  route: str

  @nn.compact
  def __call__(self, tokens, mask):
    states, pooled = GlideTextEncoder(**self.text, name="text_encoder")(tokens, mask)
    if self.route == "pooled":
      return nn.Dense(6)(nn.silu(nn.Dense(256)(pooled)))
    places = self.param("places", nn.initializers.normal(1.0), (2, 64))
    x = jnp.broadcast_to(places[None, :, None, :], (tokens.shape[0], 2, 1, 64))  # a 2 × 1 feature map
    out = layers.AttentionBlock(2)(x, states)
    return nn.Dense(3)(out.reshape(-1, 2, 64)).reshape(-1, 6)


class ImageFromCaption(nn.Module):
  """Caption tokens [B, L] -> a 24 × 24 image [B, 24, 24, 3]: a 6 × 6 grid of learned places, two attention
  layers with the U-Net's position table over them and the token states, each place decoding its 4 × 4
  pixels. The U-Net's task at pure noise with nothing else in the way: no noisy input, no convolutions.
  The flags add the U-Net's parts back one at a time (`side_probe.py image 16 <part> ...`)."""
  text: dict
  pooled: bool = False  # also add the pooled vector, projected, to every place (the U-Net's timestep-embedding path)
  resblocks: bool = False  # an ADM ResBlock (embedding: the pooled vector) before each attention layer
  coord_places: bool = False  # places from their coordinates through a Dense layer (the U-Net's CoordConv)
  adm_output: bool = False  # decode as ADM's output: GroupNorm, SiLU, a zero-initialised 3 × 3 conv
  depth: int = 2  # attention layers

  @nn.compact
  def __call__(self, tokens, mask):
    states, pooled = GlideTextEncoder(**self.text, name="text_encoder")(tokens, mask)
    if self.coord_places:
      places = nn.Dense(64)(unet.pixel_coordinates(6, 6))
    else:
      places = self.param("places", nn.initializers.normal(1.0), (6, 6, 64))
    x = jnp.broadcast_to(places[None], (tokens.shape[0], 6, 6, 64))
    if self.pooled:
      x = x + nn.Dense(64)(pooled)[:, None, None]
    emb = nn.Dense(256, name="emb")(pooled) if self.resblocks else None
    for i in range(self.depth):
      if self.resblocks:
        x = layers.ResBlock(64, name=f"res_{i}")(x, emb)
      x = layers.AttentionBlock(2, position_embedding=True, name=f"attention_{i}")(x, states)
    if self.adm_output:
      out = layers.conv3x3(4 * 4 * 3, jnp.float32, zero=True)(nn.silu(layers.GroupNorm32()(x)))
    else:
      out = nn.Dense(4 * 4 * 3)(x)
    return unet.depth_to_space(out, 4)


class UNetFromCaption(nn.Module):
  """Caption tokens [B, L] -> a 24 × 24 image [B, 24, 24, 3] through attempt 15's `:full` U-Net at t = 990,
  its mean channels read as the image: ImageFromCaption's task with the U-Net in the way. x_t is all zeros
  ("zeros") or standard normal ("noise", what the U-Net sees at pure noise; a "noise" rng)."""
  model: dict
  x_t: str

  @nn.compact
  def __call__(self, tokens, mask):
    net = models.build(self.model)
    shape = (tokens.shape[0], net.image_size, net.image_size, net.in_channels)
    x = jnp.zeros(shape) if self.x_t == "zeros" else jax.random.normal(self.make_rng("noise"), shape)
    return net(x, jnp.full((tokens.shape[0],), 990, jnp.int32), tokens=tokens, token_mask=mask)[..., :3]


def image_examples(num: int):
  """(captions, images [N, 2, 24, 24, 3] in [-1, 1]): each scene's render, and the render with the two
  objects' places along the relation's axis exchanged (the same scene on the wrong sides)."""
  texts, images = [], []
  for scene, caption, axis in two_colour_scenes(num):
    a, b = scene.objects

    def moved(obj, other):
      center = list(obj.center)
      center[axis] = other.center[axis]
      return dataclasses.replace(obj, center=tuple(center))

    right = shapes.render(scene.objects, scene.relation, 24)
    wrong = shapes.render([moved(a, b), moved(b, a)], scene.relation ^ 1, 24)
    texts.append(caption)
    images.append(np.stack([shapes.to_float(right), shapes.to_float(wrong)]))
  return texts, np.stack(images).astype(np.float32)


def place_colour_examples(num: int):
  """(captions, targets [N, 6]): the left/top object's RGB then the right/bottom one's, in [-1, 1]."""
  texts, targets = [], []
  for scene, caption, axis in two_colour_scenes(num):
    near, far = sorted(scene.objects, key=lambda o: o.center[axis])
    texts.append(caption)
    targets.append(np.concatenate([shapes.COLOR_RGB[near.color], shapes.COLOR_RGB[far.color]]) / 127.5 - 1)
  return texts, np.asarray(targets, np.float32)


# Attempt 15's `:full` (until commit 992a702), on which every read-out here was measured: the current `:full`
# takes these away (attempt 20), and the read-outs' baseline and parts ("nopool", "noss", ...) assume them.
ATTEMPT15_MODEL = dict(conv_resample=True, use_scale_shift_norm=True)
ATTEMPT15_TEXT = dict(pool="mean", pool_dropout=0.5)


def full_config():
  """Attempt 15's configs/shapes_default.py:full, whose tokenizer, context, text encoder and U-Net every
  read-out uses."""
  from configs import shapes_full  # pylint: disable=g-import-not-at-top

  config = shapes_full.get_config()
  config.model.update(ATTEMPT15_MODEL)
  config.model.text.update(ATTEMPT15_TEXT)
  return config


def full_text_config() -> dict:
  """The :full text encoder's fields, without pool_dropout (the read-outs train it deterministically)."""
  return dict(full_config().model.text, pool_dropout=0.0)


def fit_readout(net, texts, targets, loss, score, num_train: int, steps: int = 1000, encoder=None,
                batch_size: int = 64) -> None:
  """Trains `net` (text encoder inside) with Adam 1e-3 on batches of the first num_train captions and prints
  score(predictions, targets) on the rest at a few steps. encoder: text-encoder params to start from."""
  config = full_config()
  tokens, mask = tokenizer_lib.tokenize(tokenizer_lib.load_tokenizer(config.data.tokenizer), texts,
                                       config.data.context_length)
  tokens, mask, targets = jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(targets)
  # A "noise" rng for read-outs that draw x_t (UNetFromCaption); the others ignore it.
  params = net.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, tokens[:2], mask[:2])
  if encoder is not None:
    params = {"params": dict(params["params"], text_encoder=encoder)}
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, idx, key):
    grads = jax.grad(lambda p: loss(net.apply(p, tokens[idx], mask[idx], rngs={"noise": key}), targets[idx]))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  held_out = jax.jit(lambda p: score(net.apply(p, tokens[num_train:], mask[num_train:],
                                               rngs={"noise": jax.random.PRNGKey(2)}), targets[num_train:]))
  rng = np.random.default_rng(0)
  for i in range(steps + 1):
    if i in (0, 100, 250, 500, 1000, 2000, 3000, steps):
      print(f"  step {i}: held-out {float(held_out(params)):.3f}")
    params, opt_state = step(params, opt_state, jnp.asarray(rng.integers(0, num_train, batch_size)),
                             jax.random.PRNGKey(3 + i))


def supervised(num_train: int = 10_000, num_heldout: int = 2_000) -> None:
  texts, labels = side_examples(num_train + num_heldout)
  print(f"fresh :full text encoder + MLP, trained on the side label; base rate {labels.mean():.3f}; accuracy")
  fit_readout(SideClassifier(full_text_config()), texts, labels.astype(np.float32),
              lambda logits, y: optax.sigmoid_binary_cross_entropy(logits, y).mean(),
              lambda logits, y: jnp.mean((logits > 0) == y), num_train)


def places(route: str, start: str = "", num_train: int = 10_000, num_heldout: int = 2_000) -> None:
  """Regresses each place's colour from the caption alone (the U-Net's task at pure noise, without the
  layout's blur); start = "workdir@step" starts from that run's trained text encoder (EMA)."""
  encoder = None
  if start:
    workdir, step = start.split("@")
    encoder = stage_lib.load_stage(workdir, step=int(step), use_ema=True).params["text_encoder"]
  texts, targets = place_colour_examples(num_train + num_heldout)

  def right_way_round(pred, y):
    pred, y = pred.reshape(-1, 2, 3), y.reshape(-1, 2, 3)
    return jnp.mean(jnp.sum((pred - y) ** 2, (1, 2)) < jnp.sum((pred - y[:, ::-1]) ** 2, (1, 2)))

  print(f"{route} read-out, text encoder {start or 'fresh'}; share of captions whose colours come out on "
        "the right sides")
  fit_readout(PlaceColours(full_text_config(), route), texts, targets, lambda pred, y: jnp.mean((pred - y) ** 2),
              right_way_round, num_train, encoder=encoder)


class PlainBlock(layers.ResBlock):
  """layers.ResBlock's fields without its work: a 1 × 1 conv where the width changes, else the identity
  (no norm, no convolution, no embedding). For the `plain` U-Net part below."""

  @nn.compact
  def __call__(self, x, emb, deterministic: bool = True):
    del emb, deterministic
    return nn.Conv(self.out_channels, (1, 1))(x) if x.shape[-1] != self.out_channels else x


# Changes to the :full U-Net for `side_probe.py unet zeros|noise <part> ...`; "text.<field>" is a text-encoder field.
UNET_PARTS = {
    "one-level": dict(patch_size=4, channel_mult=(1,), attention_resolutions=(6,)),  # one 6 × 6 level, 64 channels
    "one-level-12": dict(channel_mult=(1,), attention_resolutions=(12,)),  # one 12 × 12 level, 64 channels
    "two-levels": dict(channel_mult=(1, 2), attention_resolutions=(6,)),  # 12 × 12 and 6 × 6, no 3 × 3 level
    "wide": dict(model_channels=128),
    "attention-12": dict(attention_resolutions=(12, 6, 3)),  # attention on the 12 × 12 level as well
    "attention-top": dict(attention_resolutions=(12,)),  # attention on the 12 × 12 level only (after two-levels)
    "resample-no-conv": dict(conv_resample=False),  # 2 × 2 average pooling down, nearest-neighbour up
    "r0": dict(num_res_blocks=0),  # only the middle block's and the up path's ResBlocks
    "nopool": {"text.pool": "none"},  # no pooled caption vector in the timestep embedding
    "noss": dict(use_scale_shift_norm=False),  # the embedding added to the features, not scaling them (AdaGN)
    "plain": {},  # every ResBlock a PlainBlock
}
IMAGE_PARTS = ("pooled", "resblocks", "coords", "adm-output", "deep")


def image(batch_size: int, parts=(), x_t: str = "", steps: int = 3000, num_train: int = 10_000,
          num_heldout: int = 2_000) -> None:
  """Fits ImageFromCaption with `parts` (IMAGE_PARTS), or with x_t "zeros" / "noise" UNetFromCaption with
  `parts` (UNET_PARTS), and prints the share of held-out captions drawn on the right sides."""
  known = UNET_PARTS if x_t else IMAGE_PARTS
  unknown = sorted(set(parts) - set(known))
  if unknown:
    raise ValueError(f"unknown {'unet' if x_t else 'image'} parts {unknown}; use {sorted(known)}.")
  if x_t:
    if x_t not in ("zeros", "noise"):
      raise ValueError(f"x_t={x_t!r}; the U-Net read-out takes an input of 'zeros' or 'noise'.")
    model = full_config().model.to_dict()
    for part in parts:
      for key, value in UNET_PARTS[part].items():
        (model["text"] if key.startswith("text.") else model)[key.removeprefix("text.")] = value
    if "plain" in parts:
      layers.ResBlock = PlainBlock  # unet.py looks it up at call time; this process only runs this read-out
    net = UNetFromCaption(model, x_t)
  else:
    net = ImageFromCaption(full_text_config(), pooled="pooled" in parts, resblocks="resblocks" in parts,
                           coord_places="coords" in parts, adm_output="adm-output" in parts,
                           depth=4 if "deep" in parts else 2)

  texts, images = image_examples(num_train + num_heldout)  # after the checks: 12,000 renders take a while

  def right_sides(pred, y):  # closer to the scene than to the scene with its objects' sides exchanged
    return jnp.mean(jnp.sum((pred - y[:, 0]) ** 2, (1, 2, 3)) < jnp.sum((pred - y[:, 1]) ** 2, (1, 2, 3)))

  print(f"24 × 24 image regressed from the caption by {type(net).__name__} {x_t} {' '.join(parts)}, batch "
        f"{batch_size}, {steps} steps; share of held-out captions whose prediction is nearer the scene than the "
        "scene with the sides exchanged")
  fit_readout(net, texts, images, lambda pred, y: jnp.mean((pred - y[:, 0]) ** 2),
              right_sides, num_train, steps, batch_size=batch_size)


if __name__ == "__main__":
  if sys.argv[1] == "supervised":
    supervised()
  elif sys.argv[1] in ("image", "unet"):
    # image <batch> [part ...] | unet zeros|noise [part ...] [steps=N]
    args = [a for a in sys.argv[3:] if not a.startswith("steps=")]
    steps = int(next((a.removeprefix("steps=") for a in sys.argv[3:] if a.startswith("steps=")), 3000))
    if sys.argv[1] == "image":
      image(int(sys.argv[2]), args, steps=steps)
    else:
      image(16, args, sys.argv[2], steps)
  elif sys.argv[1] == "places":
    places(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
  else:
    main(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "random")
