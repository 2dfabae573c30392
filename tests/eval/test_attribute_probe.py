"""The attribute probe: x0 error with the true caption against captions with one attribute swapped."""

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.data import captions, shapes
from t2i_jax.diffusion import schedules
from t2i_jax.eval import attribute_probe


def test_swapping_changes_exactly_one_attribute_of_the_caption():
  scenes = attribute_probe.probe_scenes(12)
  assert len(scenes) == 12 and all(len(s.objects) == 1 for s in scenes)
  assert scenes == attribute_probe.probe_scenes(12)
  rng = np.random.default_rng(0)
  for scene in scenes:
    obj = scene.objects[0]
    for field, names in attribute_probe.ATTRIBUTES:
      swapped = attribute_probe.swap_attribute(scene, field, rng).objects[0]
      assert getattr(swapped, field) != getattr(obj, field)
      for other, _ in attribute_probe.ATTRIBUTES:
        if other != field:
          assert getattr(swapped, other) == getattr(obj, other)
      assert captions.caption_for(captions.Scene((swapped,))) != captions.caption_for(scene)


def test_a_model_that_reads_every_word_scores_above_one_and_a_caption_blind_one_exactly_one():
  scenes = attribute_probe.probe_scenes(16)
  renders = {captions.caption_for(s): shapes.to_float(shapes.render(s.objects, image_size=16)) for s in scenes}
  schedule = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))

  every_scene = {}
  for c, sh, z, pos in itertools.product(*(range(len(names)) for _, names in attribute_probe.ATTRIBUTES)):
    scene = captions.Scene((captions.ObjectSpec(c, sh, z, pos),))
    every_scene[captions.caption_for(scene)] = scene

  def reads_the_caption(x_t, t, prompts):
    # Draws what the caption says: the probe scene itself for its true caption, else the named
    # object at its grid cell's centre.
    out = [renders[p] if p in renders else shapes.to_float(shapes.render(every_scene[p].objects, image_size=16))
           for p in prompts]
    return jnp.asarray(np.stack(out))

  def caption_blind(x_t, t, prompts):
    return jnp.clip(x_t, -1, 1)

  errors = attribute_probe.x0_errors(reads_the_caption, schedule, scenes, 16, timesteps=(500, 900))
  for t, row in errors.items():
    assert row["true"] == 0.0
    for field, _ in attribute_probe.ATTRIBUTES:
      assert row[field] > 2 * row["true"] + 0.005, (t, field, row)
  blind = attribute_probe.x0_errors(caption_blind, schedule, scenes, 16, timesteps=(500, 900))
  for row in blind.values():
    assert len(set(row.values())) == 1 and row["true"] > 0.1
  table = attribute_probe.format_table(blind)
  assert "| 500 |" in table and "| 1.00 | 1.00 | 1.00 | 1.00 |" in table


def test_binding_swaps_keep_the_words_and_a_bag_of_words_model_scores_exactly_one():
  scenes = attribute_probe.pair_probe_scenes(12)
  assert len(scenes) == 12 and all(len(s.objects) == 2 for s in scenes)
  plain = [captions.Scene(tuple(dataclasses.replace(o, center=None) for o in s.objects), s.relation) for s in scenes]
  for scene in plain:
    true = captions.caption_for(scene)
    for kind in attribute_probe.BINDING_SWAPS:
      swapped = captions.caption_for(attribute_probe.swap_binding(scene, kind))
      assert swapped != true
      # Colour and shape swaps keep the bag of words; the mirror changes one relation word.
      same_words = sorted(swapped.split()) == sorted(true.split())
      assert same_words == (kind != "relation"), (kind, true, swapped)
  mirrored = attribute_probe.swap_binding(plain[0], "relation")
  assert {plain[0].relation, mirrored.relation} in ({0, 1}, {2, 3})
  schedule = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))
  renders = {captions.caption_for(p): shapes.to_float(shapes.render(s.objects, s.relation, 16))
             for p, s in zip(plain, scenes)}

  def binds(x_t, t, prompts):
    # Draws the named scene: the probe's own layout for its true caption, else the canonical layout.
    out = []
    for prompt in prompts:
      if prompt in renders:
        out.append(renders[prompt])
        continue
      scene = next(attribute_probe.swap_binding(s, k) for s in plain for k in attribute_probe.BINDING_SWAPS
                   if captions.caption_for(attribute_probe.swap_binding(s, k)) == prompt)
      out.append(shapes.to_float(shapes.render(scene.objects, scene.relation, 16)))
    return jnp.asarray(np.stack(out))

  bag = {" ".join(sorted(captions.caption_for(s).split())): renders[captions.caption_for(s)] for s in plain}

  def bag_of_words(x_t, t, prompts):
    # Reads only which words occur: the true scene for any caption with its words.
    return jnp.asarray(np.stack([bag.get(" ".join(sorted(p.split())), np.zeros((16, 16, 3), np.float32))
                                 for p in prompts]))

  errors = attribute_probe.binding_x0_errors(binds, schedule, scenes, 16, timesteps=(850,))
  assert errors[850]["true"] == 0.0 and all(errors[850][k] > 0.01 for k in attribute_probe.BINDING_SWAPS)
  blind = attribute_probe.binding_x0_errors(bag_of_words, schedule, scenes, 16, timesteps=(850,))[850]
  assert blind["true"] == blind["color"] == blind["shape"] == 0.0 and blind["relation"] > 0.01
  table = attribute_probe.format_table({850: dict(true=0.5, relation=1.0, color=0.5, shape=0.75)})
  assert "| relation swapped / true | color swapped / true | shape swapped / true |" in table
  assert "| 850 | 0.5000 | 2.00 | 1.00 | 1.50 |" in table


def test_the_token_path_ablation_zeroes_only_the_text_keys_values_and_is_reported():
  import jax

  from t2i_jax.models.unet import UNet

  model = UNet(image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1,), attention_resolutions=(8,),
               num_head_channels=32, text=dict(vocab_size=20, context_length=6, width=16, layers=1, heads=1,
                                               pool="bow"))
  x, t = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32)
  tokens = jnp.array([[3, 4, 5, 0, 0, 0]])
  params = model.init(jax.random.PRNGKey(0), x, t, tokens=tokens, token_mask=tokens > 0)["params"]
  ablated = attribute_probe.without_token_keys_values(params)
  flat, flat_ablated = (dict(jax.tree_util.tree_leaves_with_path(p)) for p in (params, ablated))
  zeroed = [k for k in flat if "encoder_kv" in jax.tree_util.keystr(k)]
  assert len(zeroed) == 4 * 2  # kernel and bias of the attention layers: down, middle, two up
  for k, v in flat.items():
    assert np.all(np.asarray(flat_ablated[k]) == 0) if k in zeroed else np.array_equal(flat_ablated[k], v)
  with pytest.raises(ValueError, match="no encoder_kv"):
    attribute_probe.without_token_keys_values({"conv": {"kernel": jnp.ones(3)}})
  scenes = attribute_probe.pair_probe_scenes(4)
  schedule = schedules.make_schedule(schedules.beta_schedule("cosine", 1000))
  # The ablated model is asked with the true captions (and only those draw the scene exactly).
  plain = [captions.Scene(tuple(dataclasses.replace(o, center=None) for o in s.objects), s.relation) for s in scenes]
  renders = {captions.caption_for(p): shapes.to_float(shapes.render(s.objects, s.relation, 16))
             for p, s in zip(plain, scenes)}
  exact_for_true = lambda x_t, t, prompts: jnp.asarray(np.stack([renders.get(p, np.zeros((16, 16, 3), np.float32))
                                                                 for p in prompts]))
  blind = lambda x_t, t, prompts: jnp.clip(x_t, -1, 1)
  errors = attribute_probe.binding_x0_errors(blind, schedule, scenes, 16, timesteps=(500,), ablated=exact_for_true)
  assert errors[500][attribute_probe.ABLATED] == 0.0 and errors[500]["true"] > 0.01
  assert "| no token keys/values / true |" in attribute_probe.format_table({500: dict(true=0.5, **{
      attribute_probe.ABLATED: 0.5})})
