"""Fine-tuning from a base run: the grafted inpainting U-Net computes exactly the base (its new input channels
at zero); other architectures, processes and families are refused. Through the real loop (and resuming
without the base): tests/pipelines/test_inpaint.py, whose inpainting stage is fine-tuned by it."""

import jax
import numpy as np
import pytest

from configs import common
from t2i_jax.models.unet import UNet
from t2i_jax.train import finetune, loop

from tests.conftest import load_config, perturb

TINY = dict(image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=(), channel_mult=(1,),
            learn_sigma=True)


# The default's stem (2×2 patches, coordinate channels after the inpainting ones) is the layout that matters.
@pytest.mark.parametrize("layout", [dict(patch_size=2, coord_channels=True, super_res=True)])
def test_the_grafted_inpainting_unet_computes_exactly_the_base(layout):
  base, wide = UNet(**TINY, **layout), UNet(**TINY, **layout, inpaint=True)
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  x = jax.random.normal(keys[0], (2, 8, 8, 3))
  t = np.asarray([3, 700], np.int32)
  extra = {"low_res": jax.random.normal(keys[1], (2, 4, 4, 3))} if layout.get("super_res") else {}
  base_params = jax.jit(base.init)(keys[2], x, t, **extra)["params"]
  # ADM zeroes its output layers at init, where every input gives 0: move every weight off its init.
  base_params = perturb(base_params, 0.05)
  abstract = jax.eval_shape(lambda: wide.init(keys[2], x, t, **extra)["params"])
  params = finetune.graft(base_params, base, wide, abstract)
  kernel = np.asarray(params["input_conv"]["kernel"])
  assert kernel.shape[2] == wide.input_channels * layout["patch_size"] ** 2
  new = [i for i, (name, _) in enumerate(wide.input_layout) if name.startswith("inpaint")]
  per_position = kernel.reshape(kernel.shape[:2] + (layout["patch_size"] ** 2, wide.input_channels, -1))
  starts = np.cumsum([0] + [w for _, w in wide.input_layout])
  for i in new:
    assert not per_position[:, :, :, starts[i]:starts[i + 1]].any()
  image, mask = jax.random.normal(keys[3], (2, 8, 8, 3)), (jax.random.uniform(keys[4], (2, 8, 8, 1)) > 0.5)
  want = jax.jit(base.apply)({"params": base_params}, x, t, **extra)  # op by op, each forward is ~70 compiles
  assert np.abs(np.asarray(want)).mean() > 1e-2
  got = jax.jit(wide.apply)({"params": params}, x, t, **extra, inpaint_image=image, inpaint_mask=mask)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_graft_refuses_another_architecture():
  base, other = UNet(**TINY), UNet(**dict(TINY, model_channels=64), inpaint=True)
  x, t = np.zeros((1, 8, 8, 3), np.float32), np.zeros((1,), np.int32)
  base_params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                             jax.eval_shape(lambda: base.init(jax.random.PRNGKey(0), x, t)["params"]))
  abstract = jax.eval_shape(lambda: other.init(jax.random.PRNGKey(0), x, t)["params"])
  with pytest.raises(ValueError, match="has shape .* but this model's is .*same architecture"):
    finetune.graft(base_params, base, other, abstract)
  coords = UNet(**TINY, coord_channels=True)
  plain = UNet(**TINY, inpaint=True)
  with pytest.raises(ValueError, match=r"reads input\(s\) \['coordinates'\] that this one does not"):
    finetune.graft_input_kernel(np.zeros((3, 3, 5, 16)), coords, plain, (3, 3, 7, 16))


@pytest.mark.slow
def test_a_base_of_another_process_or_family_is_refused(trained_runlocal, tmp_path):
  base_dir, _ = trained_runlocal
  config = load_config("shapes_inpaint:runlocal")
  config.finetune = common.section("finetune", workdir=base_dir)
  config.diffusion.mean_type = "eps"
  with pytest.raises(ValueError, match=r"diffusion.mean_type='v' but this config has 'eps'"):
    loop.train(config, str(tmp_path / "a"))
  assert not (tmp_path / "a").exists()  # refused before the workdir was touched
  config = load_config("shapes_clip:runlocal")
  config.finetune = common.section("finetune", workdir=base_dir)
  with pytest.raises(ValueError, match="holds a 'unet' model but this config trains a 'clip'"):
    loop.train(config, str(tmp_path / "b"))
