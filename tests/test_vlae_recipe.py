"""The VLAE training recipe's pieces (REFERENCE 6.1): L1 likelihood, KL warm-up, sigmoid std head,
generator output choice, and the config checks that guard them. Known answers written out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import models, objectives, train
from hebm_jax.config_validation import validate_config
from hebm_jax.errors import ConfigError
from hebm_jax.evaluation import log_joint
from tests.conftest import tiny_digits_config


def test_l1_loss_is_the_0_1_scale_sum_over_batch_size():
  # Two 1x2 images in [-1, 1]; on [0, 1]: x = (0, 1), (0.5, 0.5); x_hat = (0.25, 1), (0.5, 0).
  x = jnp.asarray([[[[-1.0], [1.0]]], [[[0.0], [0.0]]]])
  x_hat = jnp.asarray([[[[-0.5], [1.0]]], [[[0.0], [-1.0]]]])
  # |diff| on [0, 1]: (0.25 + 0) + (0 + 0.5) = 0.75, over B = 2.
  assert float(objectives.l1_reconstruction_loss(x_hat, x)) == pytest.approx(0.375)
  assert float(objectives.likelihood_loss(x_hat, x, "l1")) == pytest.approx(0.375)


def test_vlae_loss_scale_equals_loss_ratio_times_pixels_times_mean_abs():
  # VLAE: loss_ratio * D * mean_{b, pixels} |x_hat01 - x01|; here gfactor * l1_reconstruction_loss.
  rng = np.random.default_rng(0)
  x01, xh01 = rng.uniform(0, 1, (4, 5, 5, 1)), rng.uniform(0, 1, (4, 5, 5, 1))
  vlae = 8.0 * 25 * np.mean(np.abs(xh01 - x01))
  ours = 8.0 * float(objectives.l1_reconstruction_loss(jnp.asarray(2 * xh01 - 1), jnp.asarray(2 * x01 - 1)))
  assert ours == pytest.approx(vlae, rel=1e-5)


def test_l1_log_likelihood_is_a_normalised_laplace_density_on_the_data_scale():
  rng = np.random.default_rng(1)
  x, mu = rng.uniform(-1, 1, (3, 2, 2, 1)), rng.uniform(-1, 1, (3, 2, 2, 1))
  gfactor = 8.0
  b = 2.0 / gfactor  # Laplace scale on [-1, 1]
  expected = np.sum(-np.abs(x - mu) / b - np.log(2 * b), axis=(1, 2, 3))
  got = log_joint.log_likelihood(jnp.asarray(x), jnp.asarray(mu), "l1", gfactor)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Normalised: one pixel's density integrates to 1 over the real line (trapezoid on a wide grid).
  grid = np.linspace(-20, 20, 400_001)
  dens = np.exp(np.asarray(log_joint.log_likelihood(
      jnp.asarray(grid, jnp.float32).reshape(-1, 1, 1, 1), jnp.zeros((grid.size, 1, 1, 1)), "l1", gfactor)))
  assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)


def test_kl_warmup_weight_follows_vlae_schedule():
  # VLAE: reg_coeff = 1 - exp(-iteration / 2000), iteration = 1 at the first update (our step 0).
  for step in (0, 1, 1999, 10_000):
    assert float(objectives.kl_warmup_weight(step, 2000)) == pytest.approx(
        1 - math.exp(-(step + 1) / 2000), rel=1e-6)
  assert float(objectives.kl_warmup_weight(7, 0)) == 1.0


def test_generator_encoder_loss_weights_the_whole_prior_term():
  rec, kls, f = jnp.asarray(2.0), jnp.asarray([1.0, 3.0]), jnp.asarray([0.5, 1.5])
  # 3 * 2 + 0.25 * (4 - 1) = 6.75; weight 1 is the reference's loss: 6 + 4 - 1 = 9.
  assert float(objectives.generator_encoder_loss(rec, kls, f, 3.0, jnp.asarray(0.25))) == pytest.approx(6.75)
  assert float(objectives.generator_encoder_loss(rec, kls, f, 3.0)) == pytest.approx(9.0)


def test_sigmoid_std_head_gives_vlae_standard_deviation():
  head_logvar = models.GaussianHead(3)
  head_sigmoid = models.GaussianHead(3, "sigmoid")
  h = jax.random.normal(jax.random.PRNGKey(0), (4, 7))
  params = head_logvar.init(jax.random.PRNGKey(1), h)
  mean_a, raw = head_logvar.apply(params, h)
  mean_b, logvar = head_sigmoid.apply(params, h)  # same parameter tree
  np.testing.assert_allclose(mean_a, mean_b)
  std = np.exp(0.5 * np.asarray(logvar))
  np.testing.assert_allclose(std, 1 / (1 + np.exp(-np.asarray(raw))) + 0.001, rtol=1e-5)
  assert np.all(std > 0.001) and np.all(std < 1.001)
  with pytest.raises(ValueError, match="std_head"):
    models.GaussianHead(3, "softplus").apply(params, h)


def _vlae_config(**overrides):
  config = tiny_digits_config()
  config.model.family = "vlae_small"
  config.model.channels = (4, 8, 16)
  config.model.batch_norm = True
  config.model.std_head = "sigmoid"
  config.model.output = "sigmoid"
  config.objective.likelihood = "l1"
  config.objective.gfactor = 8.0
  config.objective.kl = "analytic"
  config.objective.kl_warmup_steps = 2000
  for key, value in overrides.items():
    section, field = key.split("__")
    config[section][field] = value
  return config


def test_vlae_recipe_builds_the_sigmoid_generator_and_trains_a_step():
  config = _vlae_config()
  validate_config(config)
  model = train.create_model(config, steps_per_epoch=10)
  assert model.generator.output == "sigmoid" and model.encoder.std_head == "sigmoid"
  assert model.kl_warmup_steps == 2000
  size = config.data.image_size
  state = train.create_train_state(model, jax.random.PRNGKey(0), (size, size, 1))
  images = jax.random.uniform(jax.random.PRNGKey(1), (20, size, size, 1), minval=-1, maxval=1)
  new_state, metrics = jax.jit(lambda s, x, k: train.train_step(model, s, {"image": x}, k))(
      state, images, jax.random.PRNGKey(2))
  assert int(new_state.step) == 1
  assert float(metrics["kl_weight"]) == pytest.approx(1 - math.exp(-1 / 2000), rel=1e-5)
  # The loss is gfactor * rec + w * (KL - f): check it from the step's own metrics.
  expected = 8.0 * metrics["rec_loss"] + metrics["kl_weight"] * (metrics["kl"] - metrics["f_posterior"])
  assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("overrides, field", [
    ({"model__std_head": "softplus"}, "model.std_head"),
    ({"model__output": "relu"}, "model.output"),
    ({"objective__kl_warmup_steps": -1}, "objective.kl_warmup_steps"),
    ({"objective__likelihood": "bernoulli", "model__output": "tanh"}, "model.output"),
    ({"model__family": "hs", "model__channels": (8, 16, 32), "model__batch_norm": False},
     "model.std_head"),
])
def test_bad_recipe_values_are_named(overrides, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    validate_config(_vlae_config(**overrides))


def test_checkpoints_written_before_the_recipe_fields_still_match_their_network():
  from hebm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  config = tiny_digits_config()
  saved = checkpointing.config_to_dict(config)
  for field in ("output", "std_head"):
    del saved["model"][field]  # as written by the code before these fields existed
  assert checkpointing.architecture_differences(saved, config) == []
  config.model.std_head = "sigmoid"  # a different network: still refused
  assert checkpointing.architecture_differences(saved, config) == [
      "model.std_head: checkpoint None vs config 'sigmoid'"]
