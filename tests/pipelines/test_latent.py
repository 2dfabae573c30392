"""Latent diffusion end to end at `:runlocal` size: the KL autoencoder with VQGAN's discriminator trained two
steps through the loop and scored by --mode=eval, its latent scale stored with its checkpoint, the latent
U-Net trained two steps through the loop on the frozen autoencoder and CLIP (and on its own text encoder),
the chain sampled and scored from its config, and every mismatch of frozen models refused."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import models
from t2i_jax.data import shapes
from t2i_jax.eval import evaluate, reconstruction
from t2i_jax.models import frozen
from t2i_jax.pipelines import chain as chain_lib, latent, sample_workdir, stage as stage_lib
from t2i_jax.train import autoencoder_loss, checkpoint, families, frozen_autoencoder, loop
from tests.conftest import load_config, perturb

# The first stage every test here shares: `:gan` puts the adversarial term on at step 2 of 2 (disc_start 1), so one
# run trains the plain KL loss and the full VQGAN one, and the later stages load it as any autoencoder.
AUTOENCODER = "shapes_autoencoder:runlocal,gan"


@pytest.fixture(scope="module")
def latent_runlocal(tmp_path_factory):
  """The `shapes_latent_chain:runlocal` config and its workdirs: autoencoder and CLIP (two steps each), and
  the latent U-Net trained two steps on them."""
  root = tmp_path_factory.mktemp("latent")
  dirs = {name: str(root / name) for name in ("autoencoder", "clip", "unet")}
  loop.train(load_config(AUTOENCODER), dirs["autoencoder"])
  loop.train(load_config("shapes_clip:runlocal"), dirs["clip"])
  config = load_config("shapes_latent:runlocal")
  config.latent_diffusion.update(dict(autoencoder_workdir=dirs["autoencoder"], clip_workdir=dirs["clip"]))
  state = loop.train(config, dirs["unet"])
  assert int(state.step) == 2
  chain = load_config("shapes_latent_chain:runlocal")
  chain.latent.update(dict(unet_workdir=dirs["unet"], autoencoder_workdir=dirs["autoencoder"],
                           clip_workdir=dirs["clip"]))
  return chain, config, dirs


def _first_batches(config, task, num):
  tokenizer = families.tokenizer_for(config)
  iterator = loop.make_iterator(config, tokenizer)
  return [task.model_batch(next(iterator)) for _ in range(num)]


@pytest.mark.slow
def test_the_autoencoder_trained_through_the_loop_with_its_discriminator_and_is_scored(latent_runlocal, tmp_path):
  _, _, dirs = latent_runlocal
  workdir = str(shutil.copytree(dirs["autoencoder"], tmp_path / "autoencoder"))  # eval writes into it
  config = checkpoint.read_config(workdir)
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [m["step"] for m in lines] == [1, 2] and all(np.isfinite(m["loss"]) for m in lines)
  assert "kl" in lines[-1] and 0 < lines[-1]["psnr"] < 60
  # Step 1 (state step 0) is before disc_start: no adversarial term; step 2 has one.
  assert config.autoencoder.disc_start == 1
  assert all(lines[0][k] == 0 for k in autoencoder_loss.GAN_METRICS)
  assert lines[1]["d_loss"] > 0 and lines[1]["disc_weight"] > 0 and np.isfinite(lines[1]["g_loss"])
  assert lines[1]["loss"] > lines[1]["reconstruction"]
  # --mode=eval: reconstructions of test renders, read by the oracle.
  rows, path = evaluate.run(config, workdir)
  row = rows[0]
  assert row["num_images"] == 32 and row["image_size"] == 16 and row["step"] == 2
  assert row["original_scene_accuracy"] >= 0.9  # the oracle reads 16 px renders
  # Two steps of training reconstruct almost nothing the oracle can read.
  assert row["reconstructed_scene_accuracy"] < 0.5 and row["kept_accuracy"] < 0.5 and 0 < row["psnr"] < 20
  assert json.load(open(path))["psnr"] == row["psnr"] and os.path.exists(os.path.join(workdir, "eval_table.md"))
  assert evaluate.columns_for(config) == reconstruction.COLUMNS
  # The same images reconstructed twice are the same: the posterior's mean, not a sample.
  stage = stage_lib.load_stage(workdir)
  assert reconstruction.evaluate(stage, 8)["psnr"] == reconstruction.evaluate(stage, 8)["psnr"]
  with pytest.raises(ValueError, match="takes no --eval_setting"):
    evaluate.run(config, workdir, ["ddim:3:3"])
  # A later stage loads it as it loads any autoencoder: the discriminator's params come along, unused.
  model, params, step = checkpoint.load_params(config, workdir)
  assert step == 2 and "discriminator" in params
  assert sum(v.size for v in jax.tree.leaves(params)) == models.count_params(config.model)
  images, _, _ = shapes.render_batch("test", 0, 0, 2, image_size=16)
  round_trip = jax.jit(lambda p, x: frozen.decode(model, {"params": p},
                                                              frozen.latents(model, p, x)))
  assert round_trip(params, shapes.to_float(images)).shape == (2, 16, 16, 3)


@pytest.mark.slow
def test_the_autoencoder_checkpoint_stores_its_latent_scale(latent_runlocal):
  _, _, dirs = latent_runlocal
  ae_config = checkpoint.read_config(dirs["autoencoder"])
  # The scale saved at step 2 is 1 / std of the latents of step 2's batch under the saved EMA params.
  task = families.make_task(ae_config)
  batch = _first_batches(ae_config, task, 2)[-1]
  model, params, step = checkpoint.load_params(ae_config, dirs["autoencoder"], use_ema=True)
  z = frozen.latents(model, params, jnp.asarray(batch["image"]))
  assert z.shape == (8, 8, 8, 4)  # 16 px, f = 2
  scale = frozen_autoencoder.read_latent_scale(dirs["autoencoder"], step)
  np.testing.assert_allclose(scale, 1.0 / float(jnp.std(z)), rtol=1e-5)
  assert scale != 1.0
  # The latent run recorded that checkpoint and its scale, and its latents carry it: unit std.
  record = json.load(open(os.path.join(dirs["unet"], frozen_autoencoder.FROZEN_MODELS)))
  assert record["autoencoder"] == {"workdir": os.path.realpath(dirs["autoencoder"]), "step": 2,
                                   "latent_scale": scale}
  assert record["clip"] == {"workdir": os.path.realpath(dirs["clip"]), "step": 2}
  np.testing.assert_allclose(float(jnp.std(z * scale)), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_the_latent_unet_trains_on_scaled_latents_and_clip_token_states(latent_runlocal):
  _, config, dirs = latent_runlocal
  task = families.make_task(config, dirs["unet"])
  batch = _first_batches(config, task, 1)[0]
  assert set(batch["cond"]) == {"tokens", "token_mask"}
  embedded = task.embed(task.embed_params, jax.tree.map(jnp.asarray, batch))
  ae_model, ae_params, scale, clip_model, clip_params = frozen_autoencoder.load(task.frozen)
  z = frozen.latents(ae_model, ae_params, jnp.asarray(batch["image"])) * scale
  np.testing.assert_allclose(embedded["image"], z, atol=2e-5)  # jitted and not
  states = clip_model.apply({"params": clip_params}, jnp.asarray(batch["cond"]["tokens"]),
                            jnp.argmax(jnp.cumsum(batch["cond"]["token_mask"], -1), -1),
                            method="encode_text_states")[1]
  np.testing.assert_allclose(embedded["cond"]["context"], states, atol=2e-5)
  assert embedded["cond"]["context"].shape == (8, 20, 32)
  # Stable Diffusion's convention: every position is attended to, padding included.
  assert embedded["cond"]["context_mask"].shape == (8, 20) and bool(np.all(embedded["cond"]["context_mask"]))
  # SD-2 / SDXL's pooled embedding (model.pooled_dim, on in the config): the caption's scaled CLIP text
  # embedding; a U-Net without pooled_dim is given none.
  pooled, _ = frozen.embed_text(clip_model, clip_params, jnp.asarray(batch["cond"]["tokens"]),
                                     jnp.asarray(batch["cond"]["token_mask"]))
  assert task.model.pooled_dim == 16 and embedded["cond"]["pooled"].shape == (8, 16)
  np.testing.assert_allclose(embedded["cond"]["pooled"], pooled, atol=2e-5)
  without = jax.jit(frozen_autoencoder.make_latent_embed_fn(ae_model, clip_model, pooled=False))(
      task.embed_params, jax.tree.map(jnp.asarray, batch))
  assert "pooled" not in without["cond"]
  # The dropped condition (CFG; broadcast over the caption's length as the loss does) attends to no token:
  # the output of any masked-out context. Params perturbed: the attention's output projection starts at zero.
  model = task.model
  params = checkpoint.load_params(config, dirs["unet"])[1]
  params = perturb(params, 0.1)
  apply = jax.jit(lambda context, mask: model.apply({"params": params}, z[:2], jnp.array([5, 50]), context=context,
                                                    context_mask=mask, pooled=embedded["cond"]["pooled"][:2]))
  null = model.null_condition(2)
  shape = embedded["cond"]["context"][:2].shape
  dropped = apply(jnp.broadcast_to(null["context"], shape), jnp.broadcast_to(null["context_mask"], shape[:2]))
  np.testing.assert_allclose(dropped, apply(jnp.ones(shape), jnp.zeros(shape[:2], bool)), atol=1e-5)
  conditioned = apply(embedded["cond"]["context"][:2], embedded["cond"]["context_mask"][:2])
  assert np.abs(np.asarray(conditioned - dropped)).max() > 1e-2


@pytest.mark.slow
def test_the_chain_samples_and_scores_from_its_config(latent_runlocal, check_samples, tmp_path):
  chain, _, dirs = latent_runlocal
  paths = chain_lib.sample_to_files(latent.CHAIN, chain, str(tmp_path), prompts=["a small red circle"])
  check_samples(paths, 2, 16)  # batches of 2 throughout: one sampling program for this test
  # generate: the U-Net's latents decoded after dividing by the scale, clipped to [-1, 1].
  model = latent.load(chain.latent)
  assert model.latent_scale == frozen_autoencoder.read_latent_scale(dirs["autoencoder"], 2)
  settings = latent.settings(chain.latent, model)
  assert settings.threshold == "none" and (settings.method, settings.steps, settings.guidance) == ("ddim", 3, 3.0)
  out = latent.generate(model, ["a small red circle"] * 2, settings)
  assert out["latents"].shape == (2, 8, 8, 4) and out["image"].shape == (2, 16, 16, 3)
  ae = model.autoencoder
  decoded = ae.model.apply(ae.variables, out["latents"] / model.latent_scale, method="decode")
  np.testing.assert_allclose(out["image"], np.clip(decoded, -1, 1), atol=1e-5)
  rows, path = evaluate.run_chain(chain, str(tmp_path))
  assert rows[0]["output"] == "image" and rows[0]["image_size"] == 16 and rows[0]["num_prompts"] == 8
  stages = json.load(open(path))["stages"]
  assert set(stages) == {"unet", "autoencoder", "clip"} and stages["autoencoder"]["step"] == 2


@pytest.mark.slow
def test_the_unets_own_text_encoder_variant_reads_tokens(latent_runlocal, tmp_path):
  """`:glide_text`: no CLIP in the loop; the frozen autoencoder alone turns images into latents and the
  tokens reach the U-Net's own encoder."""
  _, _, dirs = latent_runlocal
  config = load_config("shapes_latent:runlocal,glide_text")
  config.latent_diffusion.autoencoder_workdir = dirs["autoencoder"]
  task = families.make_task(config, str(tmp_path))
  assert task.frozen["clip"] is None and task.model.text is not None and task.model.context_dim is None
  batch = jax.tree.map(jnp.asarray, _first_batches(config, task, 1)[0])
  embedded = task.embed(task.embed_params, batch)
  assert embedded["image"].shape == (8, 8, 8, 4)
  assert set(embedded["cond"]) == {"tokens", "token_mask"}
  np.testing.assert_array_equal(embedded["cond"]["tokens"], batch["cond"]["tokens"])
  # A CLIP named beside the U-Net's own encoder, or neither, is refused.
  both = config.copy_and_resolve_references()
  both.latent_diffusion.clip_workdir = dirs["clip"]
  with pytest.raises(ValueError, match="set model.text=None and model.context_dim"):
    families.make_task(both, str(tmp_path / "both"))
  neither = config.copy_and_resolve_references()
  neither.model.text = None
  with pytest.raises(ValueError, match="reads captions through model.text"):
    families.make_task(neither, str(tmp_path / "neither"))


@pytest.mark.slow
def test_frozen_models_that_differ_are_refused(latent_runlocal, tmp_path):
  chain, config, dirs = latent_runlocal
  other = chain.copy_and_resolve_references()
  other.latent.autoencoder_workdir = str(tmp_path)
  with pytest.raises(ValueError, match=r"^the latent U-Net in .* was trained on the autoencoder in .*, not "):
    latent.load(other.latent)
  other = chain.copy_and_resolve_references()
  other.latent.clip_workdir = ""
  with pytest.raises(ValueError, match=r"trained on the text encoder .*shapes_clip|trained on the text encoder"):
    latent.load(other.latent)
  other = chain.copy_and_resolve_references()
  other.latent.unet_workdir = dirs["clip"]
  with pytest.raises(ValueError, match="not latents"):
    latent.load(other.latent)
  # A resumed run whose config names another autoencoder is refused before anything is written.
  copied = str(tmp_path / "unet")
  shutil.copytree(dirs["unet"], copied)
  moved = config.copy_and_resolve_references()
  moved.latent_diffusion.autoencoder_workdir = dirs["clip"]
  moved.train.num_steps = 3
  with pytest.raises(ValueError, match="was trained on the autoencoder in"):
    loop.train(moved, copied)
  assert checkpoint.has_checkpoint(copied) and sorted(os.listdir(os.path.join(copied, "checkpoints"))) == ["2"]
  # A new run whose U-Net does not fit the frozen models is refused before its workdir exists.
  for change, message in [(dict(context_dim=16), "has text_width=32 but the U-Net has model.context_dim=16"),
                          (dict(image_size=4), "makes 8×8×4 latents but the U-Net has image_size=4")]:
    bad = config.copy_and_resolve_references()
    bad.model.update(change)
    with pytest.raises(ValueError, match=message):
      loop.train(bad, str(tmp_path / "new"))
    assert not os.path.exists(tmp_path / "new")
  # Sampling or scoring the U-Net's own workdir would give latents: pointed to the chain.
  with pytest.raises(ValueError, match="shapes_latent_chain"):
    sample_workdir.sample_to_files(config, dirs["unet"])
  with pytest.raises(ValueError, match="shapes_latent_chain"):
    evaluate.run(config, dirs["unet"])
  assert sample_workdir.periodic_sampler(config, dirs["unet"]) is None


@pytest.mark.slow
def test_a_record_pins_the_autoencoder_step_it_trained_on(latent_runlocal, tmp_path):
  """The autoencoder trained on after the latent U-Net started: the chain still decodes with the step the
  U-Net learned, and its scale."""
  chain, _, dirs = latent_runlocal
  ae_dir = str(tmp_path / "autoencoder")
  shutil.copytree(dirs["autoencoder"], ae_dir)
  unet_dir = str(tmp_path / "unet")
  shutil.copytree(dirs["unet"], unet_dir)
  record = frozen_autoencoder.read_record(unet_dir)
  record["autoencoder"]["workdir"] = os.path.realpath(ae_dir)
  with open(os.path.join(unet_dir, frozen_autoencoder.FROZEN_MODELS), "w") as f:
    json.dump(record, f)
  ae_config = load_config(AUTOENCODER)
  ae_config.train.num_steps = 4
  loop.train(ae_config, ae_dir)
  section = chain.latent.copy_and_resolve_references()
  section.update(dict(unet_workdir=unet_dir, autoencoder_workdir=ae_dir))
  model = latent.load(section)
  assert model.autoencoder.step == 2 and model.latent_scale == record["autoencoder"]["latent_scale"]
  assert frozen_autoencoder.read_latent_scale(ae_dir, 4) != model.latent_scale
