"""The dVAE's loss terms against their formulas and its schedules' ends (the family trains through the loop in
tests/pipelines/test_dalle.py, as the chain's tokenizer)."""

import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.models import dvae
from t2i_jax.train import dvae_loss
from tests.conftest import load_config


def test_logit_laplace_and_kl_terms_equal_their_formulas():
  image = jnp.full((1, 1, 1, 1), 0.5)  # 0.75 in [0, 1]; squeezed: 0.8·0.75 + 0.1 = 0.7
  x = 0.7
  mu, log_b = 0.3, -0.5
  stats = jnp.asarray([[[[mu, log_b]]]])
  expected = np.log(2) + log_b + abs(np.log(x / (1 - x)) - mu) / np.exp(log_b) + np.log(x * (1 - x))
  assert float(dvae_loss.logit_laplace_nll(image, stats)[0]) == pytest.approx(expected, rel=1e-5)
  # The decoder's mean image inverts the squeeze: μ = logit(0.7) gives back 0.5.
  mean = dvae.image_from_stats(jnp.asarray([[[[np.log(x / (1 - x)), 0.0]]]]))
  assert float(mean[0, 0, 0, 0]) == pytest.approx(0.5, abs=1e-5)
  uniform, peaked = jnp.zeros((1, 2, 2, 8)), jnp.zeros((1, 2, 2, 8)).at[..., 3].set(100.0)
  assert float(dvae_loss.kl_to_uniform(uniform)[0]) == pytest.approx(0.0, abs=1e-6)
  assert float(dvae_loss.kl_to_uniform(peaked)[0]) == pytest.approx(4 * np.log(8), rel=1e-4)


def test_the_temperature_and_kl_weight_schedules():
  settings = load_config("shapes_dvae").dvae
  assert float(dvae_loss.temperature_at(0, settings)) == pytest.approx(1.0)
  assert float(dvae_loss.temperature_at(settings.temperature_steps, settings)) == pytest.approx(1 / 16)
  assert float(dvae_loss.temperature_at(10 ** 6, settings)) == pytest.approx(1 / 16)
  assert float(dvae_loss.kl_weight_at(0, settings)) == 0.0
  assert float(dvae_loss.kl_weight_at(settings.kl_warmup_steps // 2, settings)) == pytest.approx(3.3)
  assert float(dvae_loss.kl_weight_at(10 ** 6, settings)) == pytest.approx(6.6)
