"""Tests of hebm_jax.config_validation against the shipped configs and broken variants."""

import importlib
import re

import pytest

from hebm_jax import config_validation
from hebm_jax.config_validation import ConfigError

CONFIG_MODULES = ("default", "digits", "svhn", "svhn_fid")


def _config(name="default"):
  return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", CONFIG_MODULES)
def test_shipped_configs_are_valid(name):
  config = _config(name)
  assert config_validation.validate_config(config) is None
  assert config_validation.validate_config(config, num_devices=1) is None
  assert config_validation.validate_config(config, num_devices=4) is None


def _set(config, field, value):
  *parents, leaf = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


@pytest.mark.parametrize("field,value,message", [
    ("model.channels", (32, 64, 64), "model.channels"),
    ("model.z_dims", (10,), "model.z_dims"),
    ("model.z_dims", (2, 0, 2, 10), "model.z_dims"),
    ("model.family", "multiply", "model.family"),
    ("model.batch_norm", True, "model.batch_norm"),
    ("objective.likelihood", "laplace", "objective.likelihood"),
    ("prior.type", "flow", "prior.type"),
    ("prior.activation", "tanh", "prior.activation"),
    ("prior.output_scale", 0.0, "prior.output_scale"),
    ("prior.output_scale", -2.0, "prior.output_scale"),
    ("sampler.n_steps", 0, "sampler.n_steps"),
    ("sampler.n_steps", -5, "sampler.n_steps"),
    ("sampler.step_size", 0.0, "sampler.step_size"),
    ("sampler.step_size", -0.4, "sampler.step_size"),
    ("optim.lr_prior", 0.0, "optim.lr_prior"),
    ("optim.lr_prior", -2e-6, "optim.lr_prior"),
    ("optim.lr_generator", 0.0, "optim.lr_generator"),
    ("optim.lr_encoder", -1e-4, "optim.lr_encoder"),
    ("data.image_size", 36, "data.image_size"),
    ("objective.kl", "exact", "objective.kl"),
    ("optim.b1", 1.0, "optim.b1"),
])
def test_invalid_field_is_named(field, value, message):
  config = _config()
  _set(config, field, value)
  with pytest.raises(ConfigError, match=re.escape(f"config.{message}")):
    config_validation.validate_config(config)


def test_error_messages_carry_the_offending_value():
  config = _config()
  config.prior.activation = "tanh"
  with pytest.raises(ConfigError, match=r"config\.prior\.activation: unknown activation 'tanh'"):
    config_validation.validate_config(config)

  config = _config()
  config.model.z_dims = (2, 2, 2, 10)
  config.model.channels = (32, 64, 64)
  with pytest.raises(ConfigError, match=r"got 3: \(32, 64, 64\)"):
    config_validation.validate_config(config)

  config = _config()
  config.data.image_size = 36
  with pytest.raises(ConfigError, match=r"multiple of 2\*\*\(L-1\) = 8"):
    config_validation.validate_config(config)

  config = _config()
  config.sampler.n_steps = 0
  with pytest.raises(ConfigError, match="must be a positive integer, got 0"):
    config_validation.validate_config(config)


def test_image_size_depends_on_layer_count():
  config = _config("digits")  # 3 layers at 16x16: needs a multiple of 4
  config.data.image_size = 12
  assert config_validation.validate_config(config) is None
  config.data.image_size = 14
  with pytest.raises(ConfigError, match=re.escape("config.data.image_size")):
    config_validation.validate_config(config)


def test_global_batch_must_divide_over_devices():
  config = _config()  # batch 100
  assert config_validation.validate_config(config, num_devices=5) is None
  with pytest.raises(ConfigError, match=re.escape("config.train.batch_size")):
    config_validation.validate_config(config, num_devices=3)
  # Without a device count the check is skipped.
  assert config_validation.validate_config(config) is None
  # The eval batch is split over the devices too.
  config.train.batch_size = 60
  config.eval.batch_size = 50
  assert config_validation.validate_config(config, num_devices=5) is None
  with pytest.raises(ConfigError, match=re.escape("config.eval.batch_size")):
    config_validation.validate_config(config, num_devices=4)


def test_config_error_is_a_value_error():
  assert issubclass(ConfigError, ValueError)


def test_gaussian_prior_skips_ebm_fields():
  config = _config()
  config.prior.type = "gaussian"
  config.prior.activation = "unused"
  assert config_validation.validate_config(config) is None
