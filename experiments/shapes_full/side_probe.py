"""Can a linear read-out tell, from a caption's text features, which side its first-named object is on?

For two-object training captions with two different colours, the label is whether the object whose
colour is named first sits left of (or above) the other. A logistic regression (2,000 captions,
L2 1e-3, 2,000 full-batch steps) is fitted on the text encoder's pooled vector (what the U-Net's
timestep embedding receives) and on all its token states flattened, and scored on 1,000 others.
`random` replaces the trained encoder by a fresh initialisation of the same config.
A third read-out asks what an attention key would need: from the state of one colour word alone, is
*that* colour's object left of / above the other (both colour words of each caption, so the base rate
is 1/2). Unlike the caption-level label, this one is an exclusive-or of the word's place in the
sentence and the relation, so no single word decides it.

`supervised` asks whether the encoder could learn the side if it were told: a fresh encoder of the
`:full` config, its pooled vector into a two-layer MLP, trained with Adam 1e-3 on batches of 64 of
10,000 captions to predict the label, and scored on 2,000 others.

  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py runs/full13 16000 [random]
  PYTHONPATH=. .venv/bin/python experiments/shapes_full/side_probe.py supervised
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t2i_jax.data import captions, shapes, tokenizer as tokenizer_lib
from t2i_jax.models.text_encoder import GlideTextEncoder
from t2i_jax.pipelines import text_to_image
from t2i_jax.train import checkpoint


def side_examples(num: int):
  """(captions, labels): label 1 where the first-named colour's object is left of / above the other."""
  texts, labels, index = [], [], 0
  while len(texts) < num:
    scene, caption = shapes.sample_scene("train", 0, index)
    index += 1
    if len(scene.objects) != 2 or scene.objects[0].color == scene.objects[1].color:
      continue
    a, b = scene.objects
    first, other = (a, b) if caption.find(captions.COLORS[a.color]) < caption.find(captions.COLORS[b.color]) else (b, a)
    axis = 0 if scene.relation in (0, 1) else 1  # x for left/right, y (down) for above/below
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
  config = checkpoint.read_config(workdir)
  _, params, _ = checkpoint.load_params(config, workdir, True, step)
  encoder = GlideTextEncoder(**config.model.text)
  length = config.data.context_length
  text_params = params["text_encoder"]
  if random_encoder:
    text_params = encoder.init(jax.random.PRNGKey(1), jnp.zeros((1, length), jnp.int32),
                               jnp.ones((1, length), bool))["params"]
  texts, labels = side_examples(3000)
  tokenizer = tokenizer_lib.load_tokenizer(config.data.tokenizer)
  cond = text_to_image.text_cond(texts, tokenizer, length)
  states, pooled = jax.jit(lambda t, m: encoder.apply({"params": text_params}, t, m))(
      jnp.asarray(cond["tokens"]), jnp.asarray(cond["token_mask"]))
  print(f"{workdir} step {step}, {'random' if random_encoder else 'trained'} encoder; label base rate "
        f"{labels.mean():.3f}")
  for name, features in (("pooled", np.asarray(pooled)), ("token states", np.asarray(states).reshape(len(texts), -1))):
    train, heldout = linear_accuracy(features, labels)
    print(f"  {name}: train {train:.3f}, held-out {heldout:.3f}")
  # Rows come caption by caption, so the first 4,000 (2,000 captions) train and the rest are held out.
  rows = colour_token_rows(texts, labels, cond["tokens"], tokenizer)
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


def supervised(num_train: int = 10_000, num_heldout: int = 2_000, steps: int = 1000) -> None:
  from configs import shapes_default  # pylint: disable=g-import-not-at-top

  config = shapes_default.get_config("full")
  texts, labels = side_examples(num_train + num_heldout)
  cond = text_to_image.text_cond(texts, tokenizer_lib.load_tokenizer(config.data.tokenizer),
                                 config.data.context_length)
  tokens, mask, labels = jnp.asarray(cond["tokens"]), jnp.asarray(cond["token_mask"]), jnp.asarray(labels)
  net = SideClassifier(dict(config.model.text, pool_dropout=0.0))
  params = net.init(jax.random.PRNGKey(0), tokens[:2], mask[:2])
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, idx):
    def loss(p):
      return optax.sigmoid_binary_cross_entropy(net.apply(p, tokens[idx], mask[idx]), labels[idx]).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  accuracy = jax.jit(lambda p: jnp.mean((net.apply(p, tokens[num_train:], mask[num_train:]) > 0) == labels[num_train:]))
  rng = np.random.default_rng(0)
  print(f"fresh :full text encoder + MLP, trained on the side label; base rate {float(labels.mean()):.3f}")
  for i in range(steps + 1):
    if i in (0, 100, 250, 500, steps):
      print(f"  step {i}: held-out accuracy {float(accuracy(params)):.3f}")
    params, opt_state = step(params, opt_state, jnp.asarray(rng.integers(0, num_train, 64)))


if __name__ == "__main__":
  if sys.argv[1] == "supervised":
    supervised()
  else:
    main(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "random")
