"""Inpainting: the inpainting stage fine-tuned from its base through the loop, replacement keeps the known
region exactly with the ancestral and multistep samplers and with guidance, the trained model reads its image
and mask, new inputs do not recompile, the files and the CLI's grid, and every bad image, mask or box refused
with one line."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from configs import common
from t2i_jax.data import shapes
from t2i_jax.data.captions import ObjectSpec
from t2i_jax.diffusion import samplers
from t2i_jax.pipelines import images as images_lib, inpaint, inpaint_files, stage as stage_lib, text_to_image
from t2i_jax.train import checkpoint, finetune, loop

from tests.conftest import load_config

PROMPT = "a large red circle left of a small blue square"


@pytest.fixture(scope="module")
def stages(trained_runlocal, tmp_path_factory):
  """(base text U-Net, inpainting U-Net fine-tuned from it two steps through the loop), both 16 px."""
  base_dir, _ = trained_runlocal
  workdir = str(tmp_path_factory.mktemp("inpaint"))
  config = load_config("shapes_inpaint:runlocal")
  config.finetune = common.section("finetune", workdir=base_dir)
  loop.train(config, workdir)
  return stage_lib.load_stage(base_dir), stage_lib.load_stage(workdir)


def _scene():
  """(image [1, 16, 16, 3] in [-1, 1] with a red circle on the left, mask [1, 16, 16, 1] open on the right)."""
  image = shapes.to_float(shapes.render([ObjectSpec("red", "circle", "large", position="left")], image_size=16))
  return image[None], inpaint.box_mask(16, (8, 2, 16, 14))


@pytest.mark.slow
def test_the_inpainting_stage_was_fine_tuned_from_its_base_and_resumes_without_it(stages, tmp_path):
  base, tuned = stages
  assert tuned.step == 2 and tuned.model.inpaint and not base.model.inpaint
  # Two Adam steps at lr 1e-3 move no weight further than 2e-3 from where it started: the base's
  # weights, and zeros on the new channels (a fresh init would be 0.1 away).
  base_flat = dict(jax.tree_util.tree_leaves_with_path(base.params))
  for path, value in jax.tree_util.tree_leaves_with_path(tuned.params):
    if path[0].key == "input_conv" and path[1].key == "kernel":
      continue
    np.testing.assert_allclose(np.asarray(value), np.asarray(base_flat[path]), atol=2.1e-3)
  kernel = np.asarray(tuned.params["input_conv"]["kernel"])
  grafted = finetune.graft_input_kernel(np.asarray(base.params["input_conv"]["kernel"]), base.model, tuned.model,
                                        kernel.shape)
  np.testing.assert_allclose(kernel, grafted, atol=2.1e-3)
  assert np.abs(grafted).max() > 0.05
  # A resumed run reads its own checkpoint, not the base (which may be gone by then); a run that died before
  # its first save (an empty checkpoints folder, a half-written step) still starts from the base.
  workdir = tmp_path / "resumed"
  shutil.copytree(tuned.workdir, workdir)
  assert checkpoint.has_checkpoint(str(workdir))
  (tmp_path / "empty" / "checkpoints" / "2.orbax-checkpoint-tmp").mkdir(parents=True)
  assert not checkpoint.has_checkpoint(str(tmp_path / "empty"))
  config = load_config("shapes_inpaint:runlocal")
  config.finetune = common.section("finetune", workdir=str(tmp_path / "no_such_base"))
  config.train.num_steps = 3
  assert int(loop.train(config, str(workdir)).step) == 3


@pytest.mark.parametrize("method, guidance", [("dpm++2m", 3.0), ("ddpm", 2.0)])
@pytest.mark.slow
def test_replacement_keeps_the_known_region_exactly(stages, method, guidance):
  image, mask = _scene()
  settings = text_to_image.SampleSettings(method=method, steps=4, guidance=guidance)
  for stage in stages:  # replacement alone (the base), and the inpainting model's conditioning + replacement
    out = np.asarray(inpaint.inpaint(stage, image, mask, [PROMPT, "a small blue square on the right"], settings))
    known = mask[0, ..., 0] == 1
    np.testing.assert_array_equal(out[:, known], np.broadcast_to(image[:, known], out[:, known].shape))
    assert np.abs(out[:, ~known] - image[:, ~known]).mean() > 0.05  # the hole is drawn
    assert np.isinf(inpaint.unmasked_psnr(out, image, mask)).all()


@pytest.mark.slow
def test_the_inpainting_model_reads_its_image_and_mask_without_recompiling(stages):
  _, tuned = stages
  # Two steps leave the new channels' weights near zero: set them to a visible size.
  kernel = np.array(tuned.params["input_conv"]["kernel"])
  kernel += 0.05 * np.random.default_rng(0).standard_normal(kernel.shape).astype(np.float32)
  tuned = dataclasses.replace(tuned, params=dict(tuned.params, input_conv=dict(tuned.params["input_conv"],
                                                                               kernel=kernel)))
  image, mask = _scene()
  settings = text_to_image.SampleSettings(method="ddim", steps=3, guidance=2.0)
  first = np.asarray(inpaint.inpaint(tuned, image, mask, [PROMPT], settings, replace=False))
  compiled = samplers._sample_jit._cache_size()  # pylint: disable=protected-access
  # Another image, then another mask, under the same noise: only the model's input channels see them.
  other_image = np.asarray(inpaint.inpaint(tuned, -image, mask, [PROMPT], settings, replace=False))
  other_mask = np.asarray(inpaint.inpaint(tuned, image, inpaint.box_mask(16, (0, 0, 8, 8)), [PROMPT], settings,
                                          replace=False))
  assert samplers._sample_jit._cache_size() == compiled  # pylint: disable=protected-access
  assert np.abs(first - other_image).max() > 1e-3
  assert np.abs(first - other_mask).max() > 1e-3
  # Without replacement the known region is the model's own drawing, so it need not equal the input.
  assert np.isfinite(inpaint.unmasked_psnr(first, image, mask)).all()


@pytest.mark.slow
def test_replacement_only_needs_no_inpainting_channels_but_conditioning_does(stages):
  base, _ = stages
  image, mask = _scene()
  with pytest.raises(ValueError, match="has no inpainting channels: it inpaints by replacement only"):
    inpaint.inpaint(base, image, mask, [PROMPT], text_to_image.SampleSettings(steps=2), replace=False)


@pytest.mark.parametrize("change, message", [
    (dict(image=np.zeros((1, 24, 24, 3))), r"the image has shape \(1, 24, 24, 3\) but this U-Net makes 16x16"),
    (dict(image=np.zeros((1, 16, 16, 4))), "with 3 channels"),
    (dict(image=np.full((1, 16, 16, 3), 200.0)), r"values span \[200, 200\]; give values in \[-1, 1\]"),
    (dict(mask=np.ones((1, 16, 16, 3))), "give one channel at the image's size"),
    (dict(mask=np.full((1, 16, 16, 1), 255.0)), r"the mask's values span \[255, 255\]"),
    (dict(mask=np.ones((16, 16))), "the mask keeps every pixel"),
    (dict(image=np.zeros((3, 16, 16, 3))), "3 images for 2 prompts"),
])
@pytest.mark.slow
def test_bad_images_and_masks_are_refused(stages, change, message):
  image, mask = _scene()
  args = dict(dict(image=image, mask=mask), **change)
  with pytest.raises(ValueError, match=message):
    inpaint.inpaint(stages[0], args["image"], args["mask"], [PROMPT, PROMPT], text_to_image.SampleSettings(steps=2))


def test_boxes_and_psnr():
  mask = inpaint.box_mask(8, (2, 1, 5, 3))
  assert mask.shape == (1, 8, 8, 1) and (mask == 0).sum() == 6 and mask[0, 1, 2, 0] == 0 and mask[0, 3, 2, 0] == 1
  for box in ((2, 1, 9, 3), (5, 1, 5, 3), (1, 2, 3)):
    with pytest.raises(ValueError, match="box="):
      inpaint.box_mask(8, box)
  image = np.zeros((1, 8, 8, 3))
  shifted = image + 0.1 * mask  # off by 0.1 on the known pixels, anything in the hole
  shifted[0, 1, 2] = 5.0
  np.testing.assert_allclose(inpaint.unmasked_psnr(shifted, image, mask), 10 * np.log10(4 / 0.01))


@pytest.mark.slow
def test_files_and_the_grid(stages, tmp_path):
  base, _ = stages
  image, mask = _scene()
  Image.fromarray(((image[0] + 1) * 127.5).round().astype(np.uint8)).save(tmp_path / "scene.png")
  Image.fromarray(np.where(mask[0, ..., 0] == 0, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
  read = images_lib.read_image(str(tmp_path / "scene.png"), 16)
  assert read.dtype == np.uint8 and read.shape == (16, 16, 3)
  np.testing.assert_allclose(read / 127.5 - 1.0, image[0], atol=1 / 127)
  np.testing.assert_array_equal(inpaint_files.read_mask(str(tmp_path / "mask.png"), 16), mask)
  config = load_config("shapes_default:runlocal")
  config.sample.num_images = 2
  workdir = str(shutil.copytree(base.workdir, tmp_path / "base"))  # other tests read the session's run
  before = set(os.listdir(workdir))
  paths = inpaint_files.inpaint_to_files(config, workdir, str(tmp_path / "scene.png"), mask=str(tmp_path / "mask.png"),
                                         prompts=[PROMPT, "a small blue square on the right"], steps=2)
  assert len(paths["images"]) == 2 * (2 + 2) and paths["grid"].endswith(f"grid_inpaint_{base.step}.png")
  cells = [np.asarray(Image.open(p)) for p in paths["images"]]
  np.testing.assert_array_equal(cells[0], np.asarray(Image.open(tmp_path / "scene.png")))
  known = mask[0, ..., 0] == 1
  np.testing.assert_array_equal(cells[2][known], cells[0][known])  # a sample keeps the input there
  assert set(os.listdir(workdir)) - before <= {"samples"}


def test_bad_files_are_refused_with_one_line(tmp_path):
  rgba = np.zeros((16, 16, 4), np.uint8)
  Image.fromarray(rgba).save(tmp_path / "clear.png")
  Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "grey.png")
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "rgb.png")
  Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(tmp_path / "tall.png")
  (tmp_path / "notes.png").write_text("not an image")
  read_image = images_lib.read_image
  cases = [(read_image, "clear.png", "has transparent pixels"),
           (read_image, "tall.png", "is 16x20 but this U-Net makes 16x16 images"),
           (read_image, "missing.png", "no such file"),
           (read_image, "notes.png", "is not an image file that can be read"),
           (inpaint_files.read_mask, "notes.png", "is not an image file that can be read"),
           (inpaint_files.read_mask, "grey.png", "holds values other than 0 and 255 (e.g. 128)"),
           (inpaint_files.read_mask, "rgb.png", "has mode 'RGB' (3 channels); save it as a one-channel")]
  for read, name, message in cases:
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(").replace(")", r"\)")):
      read(str(tmp_path / name), 16)
  with pytest.raises(ValueError, match="must be four integers"):
    inpaint_files.parse_box("1,2,x,4")
