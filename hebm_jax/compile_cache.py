"""JAX's persistent compilation cache for a run: compiled programs kept in its workdir.

A resumed run (after a preemption, say) and `--mode=eval` on a training run's workdir compile the
same programs again; with the cache they load them instead. The `svhn` train step takes 8.6 s to
compile on the 2-core CPU and 16.6 s on an H100 (`svhn_fid` 15 and 29 s); a resumed 20-step
digits run took 12.1 s from start to exit instead of 25.2 s (BENCHMARKS.md).

`config.train.compilation_cache` selects the directory: 'workdir' (the default) is
`<workdir>/compilation_cache`, '' leaves JAX's own setting alone (off unless the user set
`JAX_COMPILATION_CACHE_DIR`), anything else is a directory of the user's choice (it may be shared
by runs: entries are keyed by the program, the compile options, the jax/jaxlib version and the
devices). Only process 0 writes entries (JAX's rule), so a multi-host workdir is safe. The cache
is trusted code: keep it where only you can write.
"""

from __future__ import annotations

import os

import jax
from absl import logging
from etils import epath
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from hebm_jax.errors import ConfigError

SUBDIR = "compilation_cache"


def cache_dir(setting: str, workdir: str) -> str | None:
  """The cache directory `setting` ('workdir', '' or a path) names for a run in `workdir`."""
  if not isinstance(setting, str):
    raise ConfigError(f"config.train.compilation_cache: expected 'workdir', '' or a directory, "
                      f"got {setting!r}.")
  if not setting:
    return None
  if setting == "workdir":
    return os.path.join(workdir, SUBDIR)
  return os.path.expanduser(setting)


def use(setting: str, workdir: str) -> str | None:
  """Points JAX's persistent compilation cache at `cache_dir(setting, workdir)` for the rest of
  the process (a process-wide JAX setting; call it once the workdir exists). Returns the
  directory, or None when `setting` is '' (nothing is changed then).

  Raises:
    ConfigError: naming config.train.compilation_cache, when the directory is a file or cannot
      be created (JAX itself would only warn at every compile).
  """
  path = cache_dir(setting, workdir)
  if path is None:
    return None
  directory = epath.Path(path)
  if directory.is_file():
    raise ConfigError(f"config.train.compilation_cache: {path} is a file, not a directory.")
  if setting != "workdir":  # in the (checked) workdir JAX creates it at the first entry
    try:
      directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise ConfigError(f"config.train.compilation_cache: {path} cannot be created: "
                        f"{e.strerror or e}.") from e
  if jax.config.jax_compilation_cache_dir != path:
    jax_cache.set_cache_dir(path)
    # JAX decides once per process whether the cache is in use (at the first compile); reset
    # that decision so the new directory applies to the programs compiled from now on.
    jax_cache.reset_cache()
  logging.info("Persistent compilation cache: %s", path)
  return path
