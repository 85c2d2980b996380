"""The run's persistent compilation cache (`hebm_jax.compile_cache`, `config.train.compilation_cache`)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import compile_cache, train
from hebm_jax.config_validation import validate_config
from hebm_jax.errors import ConfigError


def test_settings_name_the_directory(tmp_path):
  workdir = str(tmp_path / "run")
  assert compile_cache.cache_dir("workdir", workdir) == os.path.join(workdir, "compilation_cache")
  assert compile_cache.cache_dir("", workdir) is None
  assert compile_cache.cache_dir("~/xla", workdir) == os.path.expanduser("~/xla")
  assert compile_cache.cache_dir("/shared/xla", workdir) == "/shared/xla"
  with pytest.raises(ConfigError, match="config.train.compilation_cache: expected 'workdir'"):
    compile_cache.cache_dir(None, workdir)


def test_validation_names_the_field(tiny_config):
  tiny_config.train.compilation_cache = None  # the config file cannot give another type
  with pytest.raises(ConfigError, match="train.compilation_cache"):
    validate_config(tiny_config)


def test_an_empty_setting_leaves_jax_alone(tmp_path):
  assert compile_cache.use("", str(tmp_path)) is None
  assert jax.config.jax_compilation_cache_dir is None
  assert not (tmp_path / "compilation_cache").exists()


def test_a_file_is_refused_before_anything_changes(tmp_path):
  target = tmp_path / "not_a_dir"
  target.write_text("x")
  with pytest.raises(ConfigError, match="is a file, not a directory"):
    compile_cache.use(str(target), str(tmp_path))
  with pytest.raises(ConfigError, match=r"not_a_dir/cache cannot be created: Not a directory"):
    compile_cache.use(str(target / "cache"), str(tmp_path))
  assert jax.config.jax_compilation_cache_dir is None
  assert target.read_text() == "x"


def test_programs_are_written_to_the_workdir_and_loaded_back(tmp_path):
  hits = []

  def listener(event, **kwargs):
    del kwargs
    if event.endswith("cache_hits"):
      hits.append(event)

  jax.monitoring.register_event_listener(listener)
  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even tiny programs
  try:
    path = compile_cache.use("workdir", str(tmp_path))
    assert path == str(tmp_path / "compilation_cache")
    f = lambda x: jnp.sin(x) * 3.0 + 1.0  # pylint: disable=unnecessary-lambda-assignment
    x = jnp.arange(7.0)
    want = np.asarray(jax.jit(f)(x))
    assert os.listdir(path), "no entry written"
    assert not hits
    jax.clear_caches()  # as a new process would: nothing compiled in memory
    got = np.asarray(jax.jit(f)(x))
    assert hits, "the second compile did not load the entry"
    np.testing.assert_array_equal(got, want)
  finally:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    jax.monitoring.unregister_event_listener(listener)


def test_a_run_uses_its_workdir(tiny_config, tmp_path):
  tiny_config.train.compilation_cache = "workdir"   # the default; the tiny config shares one
  tiny_config.train.num_steps = 2
  tiny_config.logging.log_every_steps = 1
  tiny_config.checkpoint.every_steps = 2
  tiny_config.eval.every_steps = 2
  tiny_config.logging.image_every_steps = 2
  train.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "run" / "compilation_cache")
