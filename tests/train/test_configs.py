"""Every published U-Net config's `:runlocal` variant trains two steps through the real loop and samples."""

import pytest

from t2i_jax.eval import evaluate
from t2i_jax.pipelines import sample_workdir


# shapes_full:runlocal: the variant's own pieces (no AdaGN or pooled caption, the attention's position table,
# the timestep tail and its early weight, which fails unless the loop's step reaches the loss) through the loop
# at runlocal's size; the plain default is test_loop's.
@pytest.mark.parametrize("spec", ["iddpm_cifar10:runlocal", "glide_base64:runlocal", "glide_upsample256:runlocal",
                                  "shapes_full:runlocal"])
@pytest.mark.slow
def test_runlocal_unet_trains_and_samples(spec, tmp_path, train_runlocal, check_samples):
  config, _ = train_runlocal(spec, tmp_path)
  paths = sample_workdir.sample_to_files(config, str(tmp_path))
  check_samples(paths, config.sample.num_images if config.model.get("text") is None or config.model.get(
      "super_res") else len(config.sample.prompts), config.model.image_size)
  if config.model.get("super_res"):  # its samples need low-resolution inputs, which the eval prompts lack
    with pytest.raises(ValueError, match="super-resolution U-Net needs low-resolution inputs"):
      evaluate.run(config, str(tmp_path))
