"""Shared test setup: four fake CPU devices (for the multi-device tests) and tiny configs."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ["JAX_NUM_CPU_DEVICES"]))


def tiny_digits_config():
  """A digits config small enough to compile and train in seconds on 2 CPU cores."""
  from configs import digits  # pylint: disable=g-import-not-at-top

  config = digits.get_config()
  config.model.z_dims = (2, 2, 4)
  config.model.channels = (8, 16, 32)
  config.prior.num_layers = 2
  config.prior.width = 16
  config.sampler.n_steps = 5
  config.train.batch_size = 20
  config.train.num_steps = 6
  config.checkpoint.every_steps = 3
  config.checkpoint.max_to_keep = 5
  config.logging.log_every_steps = 2
  config.logging.image_every_steps = 6
  config.logging.num_images = 4
  config.eval.every_steps = 6
  config.eval.batch_size = 20
  config.eval.num_batches = 2
  return config


@pytest.fixture
def tiny_config():
  return tiny_digits_config()


@pytest.fixture(autouse=True)
def _no_compilation_cache_after_the_test():
  """A run points JAX's process-wide persistent cache at its workdir (`hebm_jax.compile_cache`);
  the next test must not write into this test's temporary directory."""
  yield
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir is not None:
    compilation_cache.set_cache_dir(None)
    compilation_cache.reset_cache()
