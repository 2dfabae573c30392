"""The unCLIP chain: candidate re-ranking, slerp, the four runlocal stages sampled end to end from a prompt and
from images, no recompiles for new prompts or scales, mismatched stages refused, the chain's eval."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from t2i_jax import config_keys
from t2i_jax.diffusion import samplers
from t2i_jax.eval import clip_eval, evaluate
from t2i_jax.pipelines import chain as chain_lib, sample_workdir, stage as stage_lib, unclip

from tests.conftest import load_config, perturb

PROMPT = "a small red circle left of a large blue square"


def test_candidate_selection_keeps_the_highest_dot_product_with_the_text():
  text = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
  candidates = jnp.array([
      [[0.2, 1.0, 0.0], [5.0, 0.1, 0.0], [0.9, -0.9, 0.0]],   # the second is most aligned with x
      [[0.0, 3.0, 0.1], [1.0, 0.0, -1.0], [0.1, 0.1, 0.5]],   # the third: cosine 0.96 with z; norms do not count
  ])
  chosen = unclip.select_candidates(candidates, text)
  np.testing.assert_array_equal(np.asarray(chosen), np.asarray(candidates[jnp.arange(2), jnp.array([1, 2])]))
  # K = 1 is the identity.
  np.testing.assert_array_equal(np.asarray(unclip.select_candidates(candidates[:, :1], text)),
                                np.asarray(candidates[:, 0]))


def test_slerp_ends_at_both_vectors_and_stays_on_the_sphere():
  a, b = jnp.array([3.0, 0.0, 0.0]), jnp.array([0.0, 3.0, 0.0])
  path = np.asarray(unclip.slerp(a, b, jnp.linspace(0, 1, 5)))
  np.testing.assert_allclose(path[0], a, atol=1e-5)
  np.testing.assert_allclose(path[-1], b, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0, rtol=1e-5)
  np.testing.assert_allclose(path[2], [3 / np.sqrt(2), 3 / np.sqrt(2), 0.0], atol=1e-5)  # 45 degrees
  # Parallel vectors: no 0/0.
  assert np.all(np.isfinite(np.asarray(unclip.slerp(a, 2 * a, jnp.array([0.5])))))


def _pixels(paths):
  return np.stack([np.asarray(Image.open(p)) for p in paths])


@pytest.mark.slow
def test_the_chain_draws_a_prompt_variations_and_an_interpolation_without_recompiling(unclip_runlocal, tmp_path,
                                                                                     check_samples):
  config = unclip_runlocal
  num = config.unclip.num_images  # 2: every call below samples batches of 2 (4 prior candidates)
  out = str(tmp_path / "chain")
  paths = chain_lib.sample_to_files(unclip.CHAIN, config, out, prompts=[PROMPT])
  check_samples(paths, num, 32)  # decoder 16 px -> upsampler 32 px
  assert os.path.getsize(paths["grids"]["decoder"]) > 100
  low = sorted(p for p in os.listdir(os.path.join(out, "samples")) if p.startswith("prompts_decoder_0"))
  assert _pixels([os.path.join(out, "samples", p) for p in low]).shape[1:3] == (16, 16)
  first = paths["images"][0]
  variations = chain_lib.sample_to_files(unclip.CHAIN, config, out, image=first)
  check_samples(variations, num, 32)
  pixels = _pixels(variations["images"])
  assert not np.array_equal(pixels[0], pixels[1])  # new noise per variation

  chain = unclip.load(config.unclip)
  settings = unclip.Settings.from_config(config.unclip, chain)
  a = np.asarray(Image.open(first).resize((16, 16), Image.BOX))
  b = np.zeros_like(a)
  result = unclip.interpolate(chain, a, b, num, settings)
  ends = unclip.image_embeddings(chain, np.stack([a, b]))
  np.testing.assert_allclose(np.asarray(result["clip_emb"]), np.asarray(ends), atol=1e-4)
  assert result["upsampler"].shape == (num, 32, 32, 3)
  with pytest.raises(ValueError, match="resize the image to 16×16"):
    unclip.image_embeddings(chain, np.zeros((1, 32, 32, 3), np.uint8))

  # New prompts, seeds and guidance scales are arguments of the compiled loops.
  first = unclip.generate(chain, [PROMPT, "a large green star in the middle"], settings)
  compiled = samplers._sample_jit._cache_size()  # pylint: disable=protected-access
  guided = dataclasses.replace(settings, prior=dataclasses.replace(settings.prior, guidance=4.0, seed=5),
                               decoder=dataclasses.replace(settings.decoder, guidance=1.5))
  second = unclip.generate(chain, ["a small yellow cross on the right", PROMPT], guided)
  assert samplers._sample_jit._cache_size() == compiled  # pylint: disable=protected-access
  assert not np.allclose(np.asarray(first["clip_emb"]), np.asarray(second["clip_emb"]))
  # "caption" guidance gives the embedding to both halves: with the null caption it is no guidance at all,
  # where "both" still guides on the embedding.
  # (The two-step decoder's output barely moves with its inputs: its params are perturbed so that it does.)
  decoder = dataclasses.replace(chain.decoder, params=perturb(chain.decoder.params, 0.1))
  emb, guided_decoder = first["clip_emb"], dataclasses.replace(settings.decoder, guidance=3.0)
  plain = np.asarray(unclip.decode(decoder, emb, dataclasses.replace(settings.decoder, guidance=1.0)))
  np.testing.assert_allclose(np.asarray(unclip.decode(decoder, emb, guided_decoder, guides="caption")), plain,
                             atol=1e-5)
  assert not np.allclose(np.asarray(unclip.decode(decoder, emb, guided_decoder)), plain, atol=1e-2)
  with pytest.raises(ValueError, match="decoder_guides='text'"):
    dataclasses.replace(settings, decoder_guides="text")
  with pytest.raises(ValueError, match="guides='text'"):
    unclip.decode(decoder, emb, guided_decoder, guides="text")
  # The prior's samples are in the stages' scale (norm sqrt(E) for the training embeddings).
  np.testing.assert_allclose(np.linalg.norm(np.asarray(first["clip_emb"]), axis=1) ** 2,
                             chain.prior.model.clip_dim, rtol=0.5)


def _last_metrics(workdir):
  return json.loads(open(os.path.join(workdir, "metrics.jsonl")).readlines()[-1])


@pytest.mark.slow
def test_a_stage_trained_on_another_clip_is_refused_and_nothing_is_written(unclip_runlocal, tmp_path):
  config = unclip_runlocal
  assert 0.0 <= _last_metrics(config.unclip.clip_workdir)["image_to_text_accuracy"] <= 1.0
  assert -1.0 <= _last_metrics(config.unclip.prior_workdir)["cosine_to_target"] <= 1.0
  with pytest.raises(ValueError, match="draws images from a U-Net"):
    sample_workdir.sample_to_files(config_keys.complete(load_config("shapes_prior:runlocal")),
                                   config.unclip.prior_workdir)
  other = str(tmp_path / "other_clip")
  shutil.copytree(config.unclip.clip_workdir, other)
  bad = config_keys.complete(config)
  bad.unclip.clip_workdir = other
  out = str(tmp_path / "out")
  with pytest.raises(ValueError, match=f"the prior in .* was trained on the CLIP in {config.unclip.clip_workdir}.*"
                                       f"chain's CLIP is {other}"):
    chain_lib.sample_to_files(unclip.CHAIN, bad, out, prompts=[PROMPT])
  bad = config_keys.complete(config)
  bad.unclip.decoder_workdir = config.unclip.upsampler_workdir
  with pytest.raises(ValueError, match="is not an unCLIP decoder"):
    chain_lib.sample_to_files(unclip.CHAIN, bad, out, prompts=[PROMPT])
  bad = config_keys.complete(config)
  bad.unclip.upsampler_workdir = config.unclip.decoder_workdir
  with pytest.raises(ValueError, match="is not an unCLIP upsampler"):
    chain_lib.sample_to_files(unclip.CHAIN, bad, out, prompts=[PROMPT])
  configs = {name: (config.unclip[f"{name}_workdir"], stage_lib.read_config(config.unclip[f"{name}_workdir"]))
             for name in ("clip", "prior", "decoder", "upsampler")}
  configs["upsampler"][1].low_res.factor = 4
  with pytest.raises(ValueError, match=r"upsampler in .* takes 8px inputs .* the decoder in .* makes 16px"):
    unclip.check_chain(configs)
  assert not os.path.exists(out)


@pytest.mark.slow
def test_chain_eval_scores_the_decoder_and_the_upsampler(unclip_runlocal, tmp_path):
  rows, path = evaluate.run_chain(unclip_runlocal, str(tmp_path))
  assert [(r["output"], r["image_size"]) for r in rows] == [("decoder", 16), ("upsampler", 32)]
  for row in rows:
    for key in ("caption_accuracy", "binding_accuracy", "heldout_caption_accuracy"):
      assert 0.0 <= row[key] <= 1.0
    assert row["fid"] > 0 and row["diversity"] > 0 and row["render_diversity"] > 0
  metrics = json.load(open(path))
  assert metrics["output"] == "upsampler" and set(metrics["stages"]) == {"clip", "prior", "decoder", "upsampler"}
  assert os.path.exists(tmp_path / "eval_table.md")


@pytest.mark.slow
def test_clip_eval_reads_the_chain_clip_workdir_and_writes_its_table(unclip_runlocal, tmp_path):
  clip_workdir = unclip_runlocal.unclip.clip_workdir
  config = stage_lib.read_config(clip_workdir)
  config.data.num_test = 60  # the first 60 test and heldout examples, for time
  out = tmp_path / "clip"
  shutil.copytree(clip_workdir, out)
  rows, path = evaluate.run(config, str(out))
  (row,) = rows
  assert row["step"] == 2 and row["num_single"] + row["num_pair"] == 60 and row["num_heldout"] > 10
  for key in clip_eval.COLUMNS:
    if key.endswith(("accuracy", "_r1")):
      assert 0.0 <= row[key] <= 1.0, key
  assert json.load(open(path))["color_accuracy"] == row["color_accuracy"]
  assert "| color_accuracy |" in open(out / "eval_table.md").read()
  with pytest.raises(ValueError, match="takes no --eval_setting"):
    evaluate.run(config, str(out), ["ddim:3:3"])
