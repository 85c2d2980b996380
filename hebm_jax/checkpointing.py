"""Orbax checkpoints of a `TrainState`, with the config saved beside each one.

A workdir's checkpoints are restored only into a run whose architecture matches the config they
were written with; otherwise `IncompatibleCheckpointError` names the differing fields and nothing
on disk is touched.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

# Fields that fix the shapes of the saved arrays; everything else (sampler, optimiser rates,
# schedule lengths, logging) may change between a run and its resumption.
ARCHITECTURE_FIELDS = ("data.image_size", "data.channels", "model", "prior")


class IncompatibleCheckpointError(ValueError):
  """A workdir holds a checkpoint that cannot be restored into the configured model."""


def _get(tree: dict, dotted: str) -> Any:
  for part in dotted.split("."):
    tree = tree[part] if isinstance(tree, dict) and part in tree else None
  return tree


def _normalise(value: Any) -> Any:
  return json.loads(json.dumps(value))  # tuples -> lists, as they come back from JSON


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as a JSON-compatible dict."""
  return _normalise(config.to_dict())


def architecture_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """'field: saved -> configured' for every architecture field that differs."""
  current = config_to_dict(config)
  diffs = []
  for field in ARCHITECTURE_FIELDS:
    a, b = _get(saved, field), _get(current, field)
    if isinstance(a, dict) and isinstance(b, dict):
      for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
          diffs.append(f"{field}.{key}: checkpoint {a.get(key)!r} vs config {b.get(key)!r}")
    elif a != b:
      diffs.append(f"{field}: checkpoint {a!r} vs config {b!r}")
  return diffs


def local_replicated_sharding() -> jax.sharding.NamedSharding:
  """A full copy on every device of this process: how pmap's unreplicated outputs are laid out."""
  return jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.local_devices()), ("batch",)),
                                    jax.sharding.PartitionSpec())


def ensure_workdir(workdir: str) -> None:
  """Creates `workdir` (and its parents) if needed; a clear error if it cannot be a directory.

  Raises:
    ValueError: naming --workdir, when it is a file, lies under one, or cannot be created.
  """
  path = epath.Path(workdir)  # also takes gs:// and other paths orbax can write to
  if path.exists() and not path.is_dir():
    raise ValueError(f"--workdir={workdir} is a file, not a directory.")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--workdir={workdir} cannot be created: {e.strerror or e}.") from e


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, max_to_keep: int, create: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager over `workdir/checkpoints` keeping the last `max_to_keep` steps."""
  options = ocp.CheckpointManagerOptions(
      create=create, preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep))
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "config"))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         config: ml_collections.ConfigDict) -> bool:
  """Saves (asynchronously, atomically) the state and its config at `step`; no-op if it exists."""
  if step in manager.all_steps():
    return False
  # pmap returns host-local arrays, which orbax cannot write from several processes; as global,
  # fully replicated arrays one copy is written however many hosts there are. Replicating over
  # the local devices first also admits states built on one device or in numpy.
  state = jax.tree.map(ocp.utils.fully_replicated_host_local_array_to_global_array,
                       jax.device_put(state, local_replicated_sharding()))
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_to_dict(config))),
      force=True)


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config a checkpoint was written with."""
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def restore(manager: ocp.CheckpointManager, target: Any, config: ml_collections.ConfigDict,
            step: int | None = None) -> tuple[Any, int | None]:
  """Restores the latest (or given) checkpoint into the structure of `target`.

  Args:
    manager: from `make_manager`.
    target: a state (or its `jax.eval_shape`) giving the structure, shapes and dtypes.
    config: the current config, checked against the checkpoint's before any array is read.
    step: the step to restore; None for the latest.

  Returns:
    (restored state with numpy leaves, step), or (target, None) when there is no checkpoint.

  Raises:
    IncompatibleCheckpointError: the checkpoint was written for another architecture.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return target, None
  where = os.path.join(str(manager.directory), str(step))
  try:
    saved = saved_config(manager, step)
  except Exception as e:
    raise IncompatibleCheckpointError(
        f"Checkpoint {where} has no readable config ({type(e).__name__}: {e}); it was not "
        "written by hebm-jax. Use another --workdir; the checkpoint was left untouched.") from e
  diffs = architecture_differences(saved, config)
  if diffs:
    raise IncompatibleCheckpointError(
        f"Checkpoint {where} was written for a different model and cannot be resumed:\n  "
        + "\n  ".join(diffs) + "\nUse another --workdir or the matching config; the checkpoint "
        "was left untouched.")
  # Restored as host numpy arrays on every process; the caller places them on its devices.
  abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), x.dtype), jax.eval_shape(lambda: target))
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"]
  except Exception as e:
    raise IncompatibleCheckpointError(
        f"Checkpoint {where} could not be read into the configured train state "
        f"({type(e).__name__}: {e}): it is damaged or was written by another version of hebm-jax. "
        f"It was left untouched; the work directory holds steps {list(manager.all_steps())}. "
        "Move it aside to resume from an earlier one, or use another --workdir.") from e
  return restored, step
