"""Shared test setup: four fake CPU devices (for the multi-device tests) and tiny configs."""

import atexit
import functools
import os
import shutil
import tempfile

# Must happen before JAX initialises its backends.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ["JAX_NUM_CPU_DEVICES"]))


@functools.cache
def compilation_cache_of_this_process() -> str:
  """A persistent compilation cache shared by this process's tiny runs (one per xdist worker, so
  no two processes write to it at once), removed at exit. Named by the process id, because this
  file is imported twice: as pytest's `conftest` and as `tests.conftest`."""
  path = os.path.join(tempfile.gettempdir(), f"hebm-test-compilation-cache-{os.getpid()}")
  os.makedirs(path, exist_ok=True)
  atexit.register(shutil.rmtree, path, True)
  return path


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
  # Most tests train this same model: loading its programs beats compiling them in every test.
  # Tests of the default ('workdir') set it back.
  config.train.compilation_cache = compilation_cache_of_this_process()
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
