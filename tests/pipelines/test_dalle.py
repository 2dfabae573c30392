"""DALL·E 1: the token sampler's filters, re-ranking, the loss's weights, and the runlocal chain trained two
steps through the real loop, sampled and re-ranked."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import config_keys
from t2i_jax.eval import evaluate
from t2i_jax.models import dalle as dalle_model
from t2i_jax.pipelines import chain as chain_lib, dalle, stage as stage_lib
from t2i_jax.train import dalle_loss, loop
from tests.conftest import load_config


def test_top_k_and_top_p_keep_the_right_tokens():
  logits = jnp.log(jnp.asarray([[0.1, 0.4, 0.2, 0.3], [0.7, 0.1, 0.1, 0.1]]))
  kept = lambda k, p: np.isfinite(np.asarray(dalle.filter_logits(logits, k, p)))  # noqa: E731
  np.testing.assert_array_equal(kept(0, 1.0), np.ones((2, 4), bool))
  np.testing.assert_array_equal(kept(2, 1.0), [[False, True, False, True], [True, True, True, True]])  # ties kept
  np.testing.assert_array_equal(kept(1, 1.0)[0], [False, True, False, False])
  # Nucleus 0.6: 0.4 + 0.3 reaches it (0.4 alone does not); the second row's 0.7 alone does.
  np.testing.assert_array_equal(kept(0, 0.6), [[False, True, False, True], [True, False, False, False]])
  np.testing.assert_array_equal(kept(0, 0.05), [[False, True, False, False], [True, False, False, False]])
  np.testing.assert_array_equal(kept(3, 0.75), [[False, True, True, True], [True, True, True, True]])
  # Traced k and p: one program for every value.
  jitted = jax.jit(dalle.filter_logits)
  np.testing.assert_array_equal(np.isfinite(jitted(logits, jnp.int32(1), jnp.float32(1.0)))[0],
                                [False, True, False, False])


def test_token_sampler_settings_parse_and_refuse_diffusion_flags():
  assert dalle.parse_setting("") == {}
  assert dalle.parse_setting("candidates=8,scale=3,top_p=0.9") == dict(candidates=8, scale=3.0, top_p=0.9)
  for bad in ("dpm++2m:20:3", "candidates=many", "beam=4"):
    with pytest.raises(ValueError, match="token sampler setting"):
      dalle.parse_setting(bad)
  section = config_keys.complete(load_config("shapes_dalle_chain:runlocal")).dalle
  assert dalle.Settings.from_config(section, overrides=dict(guidance=3.0)).scale == 3.0
  with pytest.raises(ValueError, match="--sampler: the DALL·E chain samples tokens"):
    dalle.Settings.from_config(section, overrides=dict(method="ddim"))
  with pytest.raises(ValueError, match="top_p=0.0 must be in"):
    dalle.Settings.from_config(section, overrides=dict(top_p=0.0))


def test_rerank_picks_each_prompts_best_candidate():
  scores = jnp.asarray([[0.1, 0.9, 0.3], [0.5, 0.2, 0.6]])
  np.testing.assert_array_equal(dalle.rerank(scores), [1, 2])


def test_the_loss_weighs_text_by_one_eighth_and_image_by_seven_eighths():
  model = dalle_model.DalleTransformer(text_vocab=5, text_len=3, image_vocab=4, image_side=2, width=8, layers=1,
                                       heads=2)
  text = jnp.asarray([[1, 2, 0]], jnp.int32)
  mask = jnp.asarray([[True, True, False]])
  image = jnp.asarray([[0, 1, 2, 3]], jnp.int32)
  # Each piece compiled whole: op by op this tiny check dispatched ~175 programs.
  params = jax.jit(model.init)(jax.random.PRNGKey(0), text, mask, image)["params"]
  text_logits, image_logits = jax.jit(model.apply)({"params": params}, text, mask, image)
  # By hand: the text term is the one real target (token 2 at position 1), the image term the mean of four.
  log_text = jax.nn.log_softmax(text_logits)
  log_image = jax.nn.log_softmax(image_logits)
  text_term = -float(log_text[0, 0, 2])
  image_term = -float(np.mean([log_image[0, i, i] for i in range(4)]))
  batch = {"image_tokens": image, "cond": {"tokens": text, "token_mask": mask}}
  loss, aux = jax.jit(dalle_loss.make_loss_fn(model))(params, batch, jax.random.PRNGKey(1))
  assert aux["metrics"]["text_loss"] == pytest.approx(text_term, rel=1e-5)
  assert aux["metrics"]["image_loss"] == pytest.approx(image_term, rel=1e-5)
  assert float(loss) == pytest.approx(text_term / 8 + 7 * image_term / 8, rel=1e-5)
  # Every caption dropped: the text term is gone and the image term reads the padding embeddings.
  dropped, aux = jax.jit(dalle_loss.make_loss_fn(model, p_drop_text=1.0))(params, batch, jax.random.PRNGKey(1))
  assert aux["metrics"]["text_loss"] == 0.0 and float(dropped) != pytest.approx(float(loss))


@pytest.fixture(scope="module")
def dalle_runlocal(tmp_path_factory):
  """The shapes_dalle_chain:runlocal config over a dVAE tokenizer, a CLIP and a transformer, each trained two
  steps through the real loop."""
  root = tmp_path_factory.mktemp("dalle")
  dirs = {name: str(root / name) for name in ("tokenizer", "clip", "transformer")}
  loop.train(load_config("shapes_dvae:runlocal"), dirs["tokenizer"])
  lines = [json.loads(line) for line in open(os.path.join(dirs["tokenizer"], "metrics.jsonl"))]
  # Both schedules end at step 2 in :runlocal; the metrics the dVAE is judged by are logged.
  assert lines[-1]["kl_weight"] == pytest.approx(6.6) and lines[-1]["temperature"] == pytest.approx(1 / 16, rel=1e-4)
  assert 0 < lines[-1]["codes_used"] <= 1 and 1 <= lines[-1]["perplexity"] <= 256 and np.isfinite(lines[-1]["nll"])
  loop.train(load_config("shapes_clip:runlocal"), dirs["clip"])
  config = load_config("shapes_dalle:runlocal")
  config.transformer.tokenizer_workdir = dirs["tokenizer"]
  state = loop.train(config, dirs["transformer"])
  assert int(state.step) == 2
  chain = load_config("shapes_dalle_chain:runlocal")
  chain.dalle.update(dict(tokenizer_workdir=dirs["tokenizer"], transformer_workdir=dirs["transformer"],
                          clip_workdir=dirs["clip"]))
  return chain, dirs


@pytest.mark.slow
def test_the_chain_samples_re_ranks_and_does_not_recompile_for_new_prompts(dalle_runlocal, tmp_path, check_samples):
  chain, dirs = dalle_runlocal
  paths = chain_lib.sample_to_files(dalle.CHAIN, chain, str(tmp_path), prompts=["a small red circle"])
  check_samples(paths, 2, 16)
  section = config_keys.complete(chain).dalle
  stages = dalle.load(section)
  settings = dalle.Settings.from_config(section, stages, overrides=dict(guidance=2.0, top_k=20))
  assert settings.scale == 2.0 and settings.candidates == 2
  out = dalle.generate(stages, ["a large blue square", "a small green star"], settings)
  assert out["image"].shape == (2, 16, 16, 3) and out["tokens"].shape == (2, 64)
  assert out["tokens"].min() >= 0 and out["tokens"].max() < 256 and np.all(np.isfinite(out["clip_score"]))
  compiled = dalle.sample_tokens._cache_size()
  # New prompts, seed, temperature, top-k, top-p and scale: the same program.
  other = dataclasses.replace(settings, seed=3, temperature=0.7, top_k=5, top_p=0.9, scale=3.0)
  dalle.generate(stages, ["a small red plus at the top", "a large green circle"], other)
  assert dalle.sample_tokens._cache_size() == compiled
  single = dalle.generate(stages, ["a large blue square"], dataclasses.replace(settings, candidates=1))
  assert "clip_score" not in single and single["image"].shape == (1, 16, 16, 3)
  # Without a CLIP to judge them, K candidates are not drawn: the chain samples exactly as with one.
  unjudged = dalle.generate(dataclasses.replace(stages, clip=None), ["a large blue square"], settings)
  np.testing.assert_array_equal(unjudged["tokens"], single["tokens"])
  # --mode=eval: the re-ranked chain and single samples, each output scored by the oracle.
  rows, path = evaluate.run_chain(chain, str(tmp_path / "eval"))
  assert [row.get("candidates") for row in rows] == [None, 1] and all(row["image_size"] == 16 for row in rows)
  assert all(0.0 <= row["caption_accuracy"] <= 1.0 for row in rows) and path.endswith("metrics.json")
  # The dVAE is scored on its reconstructions like the other autoencoders (a copy: eval writes there).
  tokenizer = str(shutil.copytree(dirs["tokenizer"], tmp_path / "dvae"))
  (row,), _ = evaluate.run(stage_lib.read_config(tokenizer), tokenizer)
  assert row["num_images"] == 32 and row["image_size"] == 16 and 0 < row["psnr"] < 30
  wrong = config_keys.complete(chain)
  wrong.dalle.tokenizer_workdir = dirs["clip"]
  with pytest.raises(ValueError, match="holds no image tokenizer"):
    dalle.load(wrong.dalle)
