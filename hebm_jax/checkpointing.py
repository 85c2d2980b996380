"""Orbax checkpoints of a `TrainState`, with the config and a digest saved beside each one.

A workdir's checkpoints are restored only into a run whose architecture matches the config they
were written with; otherwise `IncompatibleCheckpointError` names the differing fields and nothing
on disk is touched.

Each checkpoint also holds a digest (path, dtype, shape and SHA-256 of every leaf), so that a
restore notices files that were damaged after they were written. Restoring the latest checkpoint
skips damaged ones: a step that cannot be read, does not match its digest or holds non-finite
values is renamed to `<step>.damaged-<reason>-<UTC time>` (never deleted; out of the all-digit
names orbax and `evaluation.checkpoints` look for) and the next older step is tried.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging as logging_std
import os
import sys
import traceback
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from hebm_jax import fileio

# Fields that fix the shapes of the saved arrays; everything else (sampler, optimiser rates,
# schedule lengths, logging) may change between a run and its resumption.
ARCHITECTURE_FIELDS = ("data.image_size", "data.channels", "model", "prior")
# Architecture fields added after checkpoints were written without them, with the value that
# builds the network those checkpoints hold: absent from a saved config means this value.
ADDED_ARCHITECTURE_FIELDS = {"model.output": "", "model.std_head": "logvar",
                             "prior.output_scale": 1.0}


# Bumped when the digest's layout changes; a digest of a newer version is not checked.
DIGEST_VERSION = 1


class IncompatibleCheckpointError(ValueError):
  """A workdir holds a checkpoint that cannot be restored into the configured model."""


class DamagedCheckpointError(IncompatibleCheckpointError):
  """A checkpoint cannot be read, does not match its digest, or holds non-finite values."""


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (unwritable directory, full disk, ...)."""


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
        absent = ADDED_ARCHITECTURE_FIELDS.get(f"{field}.{key}")
        if key not in a and absent is not None and b.get(key) == absent:
          continue  # a checkpoint from before the field existed: the same network
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
  """<workdir>/checkpoints, absolute for a local workdir (orbax needs that), a URL kept as is."""
  return os.path.join(fileio.absolute(workdir), "checkpoints")


class _Manager(ocp.CheckpointManager):
  """A CheckpointManager whose failed writes raise `CheckpointSaveError`, wherever they surface.

  Orbax writes in background threads and reports a failure when it is next waited for: from
  `wait_until_finished`, and so from the next `save` and from `close`, which wait first.
  """

  _saving_step: int | None = None

  def save(self, step: int, *args, **kwargs) -> bool:
    try:
      saved = super().save(step, *args, **kwargs)
    except CheckpointSaveError:  # the previous save failed: already named
      raise
    except OSError as e:
      raise _save_error(self.directory, step, e) from e
    self._saving_step = step
    return saved

  def wait_until_finished(self) -> None:
    try:
      super().wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught
      # Only writes are waited for here, so whatever failed, the checkpoint was not written.
      raise _save_error(self.directory, self._saving_step, e) from e


def _save_error(directory: Any, step: int | None, error: BaseException) -> CheckpointSaveError:
  what = f"checkpoint step {step}" if step is not None else "a checkpoint"
  return CheckpointSaveError(
      f"Could not write {what} to {directory}: {type(error).__name__}: {_first_line(error)}. "
      "The checkpoints already there were not touched; make the directory writable or free "
      "space, then resume.")


def make_manager(workdir: str, max_to_keep: int, create: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager over `workdir/checkpoints` keeping the last `max_to_keep` steps.

  Its `save`, `wait_until_finished` and `close` raise `CheckpointSaveError` when a write failed.
  """
  options = ocp.CheckpointManagerOptions(
      create=create, preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep))
  return _Manager(checkpoint_dir(workdir), options=options,
                  item_names=("state", "config", "digest"))


def _leaf_bytes(value: Any) -> np.ndarray:
  """The leaf's values on this host, C-contiguous, as a flat byte view."""
  host = np.asarray(jax.device_get(value))
  return np.ascontiguousarray(host).reshape(-1).view(np.uint8)


def state_digest(state: Any) -> dict:
  """{'version', 'leaves': {path: {'dtype', 'shape', 'sha256'}}} of every leaf of `state`.

  Paths are `jax.tree_util.keystr` of the flattened-with-path tree. Leaves must be fully
  addressable on this process (numpy, or arrays replicated over the local devices).
  """
  leaves = {}
  for path, value in jax.tree_util.tree_flatten_with_path(state)[0]:
    host = np.asarray(jax.device_get(value))
    leaves[jax.tree_util.keystr(path)] = {
        "dtype": str(host.dtype), "shape": list(host.shape),
        "sha256": hashlib.sha256(_leaf_bytes(host)).hexdigest()}
  return {"version": DIGEST_VERSION, "leaves": leaves}


def _check_writable(directory: epath.Path, step: int) -> None:
  """Raises `CheckpointSaveError` now if `directory` refuses a new entry.

  Orbax creates the step's directory in a background thread; when that fails, the threads
  waiting for the directory wait out orbax's coordination timeout (minutes) before the process
  can exit. Failing here, before orbax starts, avoids that for unwritable directories.
  """
  if "://" in str(directory):  # object stores have no directories to probe
    return
  probe = directory / f".write-probe-{step}-{jax.process_index()}-{os.getpid()}"
  try:
    probe.mkdir(parents=True, exist_ok=True)
    probe.rmdir()
  except OSError as e:
    raise _save_error(directory, step, e) from e


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         config: ml_collections.ConfigDict) -> bool:
  """Saves the state, its config and its digest at `step` (asynchronously, atomically).

  A no-op (False) when the step exists.

  Raises:
    CheckpointSaveError: the directory cannot be written, or (from here or from the manager's
      next `wait_until_finished`) the write failed; earlier checkpoints are left as they were.
  """
  if step in manager.all_steps():
    return False
  _check_writable(epath.Path(manager.directory), step)
  # pmap returns host-local arrays, which orbax cannot write from several processes; as global,
  # fully replicated arrays one copy is written however many hosts there are. Replicating over
  # the local devices first also admits states built on one device or in numpy.
  local = jax.device_put(state, local_replicated_sharding())
  # From the host-local copy: a global array spanning several processes cannot be fetched.
  digest = state_digest(local)
  state = jax.tree.map(ocp.utils.fully_replicated_host_local_array_to_global_array, local)
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_to_dict(config)),
      digest=ocp.args.JsonSave(digest)), force=True)


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config a checkpoint was written with."""
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


class _Damage(NamedTuple):
  """Why a checkpoint is not restored: `slug` goes into the renamed directory's name."""
  slug: str
  detail: str


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else "(no message)"


def _unreadable(what: str, error: BaseException) -> _Damage:
  return _Damage("unreadable", f"unreadable{what}: {type(error).__name__}: {_first_line(error)}")


def _some(paths: list[str]) -> str:
  shown = paths[0].lstrip(".")
  return shown if len(paths) == 1 else f"{shown} (and {len(paths) - 1} more)"


def _is_late_loop_callback(unraisable: Any) -> bool:
  """Whether an unraisable exception is a read finishing after its asyncio loop was closed.

  Orbax reads all arrays of a checkpoint concurrently in a fresh event loop and closes the loop
  as soon as one read fails. TensorStore then completes the other reads and tries to hand each
  result to the closed loop (`call_soon_threadsafe`), which raises `RuntimeError: Event loop is
  closed` in TensorStore's thread; Python reports each one as unraisable (one traceback per
  array on stderr). Nothing waits for those results, so nothing is lost by dropping them.
  """
  error = unraisable.exc_value
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
  return any(frame.name == "call_soon_threadsafe" for frame in frames)


def _drop_late_loop_callbacks() -> None:
  """Installs (once) an unraisable-exception hook that drops only `_is_late_loop_callback`s.

  Everything else goes to the hook that was there before. The hook stays: the late callbacks
  arrive after the failed read has returned.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_drops_late_loop_callbacks", False):
    return

  def hook(unraisable: Any) -> None:
    if not _is_late_loop_callback(unraisable):
      previous(unraisable)

  hook._drops_late_loop_callbacks = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


class _UnretrievedReadErrors(logging_std.Filter):
  """Drops asyncio's "Future (or Task) exception was never retrieved" for the sibling reads of a
  failed checkpoint read (the same teardown as above, when it reaches the loop before it closes):
  their errors are the damage the restore already reports, once, as a warning. Which of the two
  asyncio logs depends on whether the read was still wrapped in a Task when it was collected."""

  _PREFIXES = ("Future exception was never retrieved", "Task exception was never retrieved")
  _MARKERS = ("OUT_OF_RANGE", "DATA_LOSS", "Error opening", "Error reading")

  def filter(self, record: logging_std.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith(self._PREFIXES)
                and any(m in message for m in self._MARKERS))


if not any(isinstance(f, _UnretrievedReadErrors) for f in logging_std.getLogger("asyncio").filters):
  logging_std.getLogger("asyncio").addFilter(_UnretrievedReadErrors())

# Also for reads outside `restore` (orbax calls of other modules); `restore` re-installs the
# hook should something have replaced it since.
_drop_late_loop_callbacks()


def _key_token(key: Any) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _layout(tree: Any, normalise: bool = False) -> dict[str, tuple[str, tuple[int, ...]]]:
  """{path: (dtype, shape)} of the leaves.

  `normalise` writes paths as plain key tokens ('opt_state_gi/2/count'): orbax's metadata has
  dict keys where the train state has attributes, so only that form compares the two.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = "/".join(_key_token(k) for k in path) if normalise else jax.tree_util.keystr(path)
    dtype = getattr(leaf, "dtype", None)
    out[key] = (str(np.dtype(dtype)) if dtype is not None else type(leaf).__name__,
                tuple(int(d) for d in getattr(leaf, "shape", ())))
  return out


def _layout_differences(saved: dict, wanted: dict) -> list[str]:
  diffs = [f"{p.lstrip('.')}: only in the checkpoint" for p in sorted(set(saved) - set(wanted))]
  diffs += [f"{p.lstrip('.')}: not in the checkpoint" for p in sorted(set(wanted) - set(saved))]
  diffs += [f"{p.lstrip('.')}: checkpoint {saved[p][0]}{list(saved[p][1])} vs train state "
            f"{wanted[p][0]}{list(wanted[p][1])}" for p in sorted(set(saved) & set(wanted))
            if saved[p] != wanted[p]]
  return diffs


def _read_digest(manager: ocp.CheckpointManager, step: int) -> dict | None | _Damage:
  """The step's digest as {path: (dtype, shape, sha256)}.

  None when it has none (written before digests) or one of a newer version; a `_Damage` when it
  cannot be read.
  """
  if not (epath.Path(manager.directory) / str(step) / "digest").exists():
    logging.info("Checkpoint step %d has no digest (written before digests were added): its "
                 "values are checked for non-finite numbers only.", step)
    return None
  try:
    digest = manager.restore(step, args=ocp.args.Composite(
        digest=ocp.args.JsonRestore()))["digest"]
    version = int(digest["version"])
    if version > DIGEST_VERSION:
      logging.info("Checkpoint step %d has a digest of version %d (this hebm-jax reads up to "
                   "%d): its values are checked for non-finite numbers only.", step, version,
                   DIGEST_VERSION)
      return None
    return {path: (str(entry["dtype"]), tuple(int(d) for d in entry["shape"]),
                   str(entry["sha256"])) for path, entry in digest["leaves"].items()}
  except Exception as e:  # pylint: disable=broad-exception-caught
    return _unreadable(" digest", e)


def _check_layout(manager: ocp.CheckpointManager, step: int, abstract: Any,
                  digest: dict | None) -> _Damage | None:
  """Raises `IncompatibleCheckpointError` when the step holds another train-state layout.

  A checkpoint of another layout (written by another version of hebm-jax, say) would fail to
  read like a damaged one; it is not damage, and the older steps have the same layout, so the
  run stops without moving anything. Returns a `_Damage` when the layout cannot be read.
  """
  if digest is not None:
    saved = {path: (dtype, shape) for path, (dtype, shape, _) in digest.items()}
    diffs = _layout_differences(saved, _layout(abstract))
  else:  # before digests: orbax's own record of the tree
    handler = ocp.StandardCheckpointHandler()
    try:
      metadata = handler.metadata(epath.Path(manager.directory) / str(step) / "state")
    except Exception as e:  # pylint: disable=broad-exception-caught
      return _unreadable("", e)
    finally:
      handler.close()
    diffs = _layout_differences(_layout(metadata, normalise=True),
                                _layout(abstract, normalise=True))
  if diffs:
    where = os.path.join(str(manager.directory), str(step))
    shown = diffs[:8] + ([f"... and {len(diffs) - 8} more"] if len(diffs) > 8 else [])
    raise IncompatibleCheckpointError(
        f"Checkpoint {where} holds a train state of another layout than this version of "
        "hebm-jax builds, and cannot be resumed:\n  " + "\n  ".join(shown) + "\nUse the "
        "hebm-jax version that wrote it, or another --workdir; the checkpoint was left "
        "untouched.")
  return None


def _verify(restored: Any, digest: dict | None) -> _Damage | None:
  """Compares the restored leaves with the digest, then looks for non-finite values."""
  leaves = jax.tree_util.tree_flatten_with_path(restored)[0]
  if digest is not None:
    mismatched = [jax.tree_util.keystr(path) for path, value in leaves
                  if hashlib.sha256(_leaf_bytes(value)).hexdigest()
                  != digest[jax.tree_util.keystr(path)][2]]
    if mismatched:
      return _Damage("sha256", f"sha256 mismatch in {_some(mismatched)}")
  nonfinite = [jax.tree_util.keystr(path) for path, value in leaves
               if jnp.issubdtype(np.asarray(value).dtype, jnp.inexact)
               and not np.all(np.isfinite(np.asarray(value)))]
  if nonfinite:
    return _Damage("nonfinite", f"non-finite values in {_some(nonfinite)}")
  return None


def _read_verified(manager: ocp.CheckpointManager, step: int, abstract: Any,
                   config: ml_collections.ConfigDict) -> tuple[Any, _Damage | None]:
  """(state, None) for a good step; (None, damage) for a damaged one.

  Raises:
    IncompatibleCheckpointError: the step was not written by hebm-jax, or for another
      architecture or train-state layout.
  """
  where = os.path.join(str(manager.directory), str(step))
  if not (epath.Path(manager.directory) / str(step)).is_dir():
    raise IncompatibleCheckpointError(
        f"There is no checkpoint {where}; the work directory holds steps "
        f"{list(manager.all_steps())}.")
  if not (epath.Path(manager.directory) / str(step) / "config").exists():
    raise IncompatibleCheckpointError(
        f"Checkpoint {where} has no config; it was not written by hebm-jax. Use another "
        "--workdir; the checkpoint was left untouched.")
  try:
    saved = saved_config(manager, step)
  except Exception as e:  # pylint: disable=broad-exception-caught
    return None, _unreadable(" config", e)
  diffs = architecture_differences(saved, config)
  if diffs:
    raise IncompatibleCheckpointError(
        f"Checkpoint {where} was written for a different model and cannot be resumed:\n  "
        + "\n  ".join(diffs) + "\nUse another --workdir or the matching config; the checkpoint "
        "was left untouched.")
  digest = _read_digest(manager, step)
  if isinstance(digest, _Damage):
    return None, digest
  damage = _check_layout(manager, step, abstract, digest)
  if damage:
    return None, damage
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"]
  except MemoryError:  # this host's limit, not the checkpoint's fault
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    return None, _unreadable("", e)
  damage = _verify(restored, digest)
  return (None, damage) if damage else (restored, None)


def _move_aside(manager: ocp.CheckpointManager, step: int, damage: _Damage) -> str:
  """Renames the step's directory out of the all-digit names; returns the new path."""
  directory = epath.Path(manager.directory)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  if jax.process_count() > 1:  # one name on every process, whatever their clocks say
    stamp = bytes(np.asarray(multihost_utils.broadcast_one_to_all(
        np.frombuffer(stamp.encode(), np.uint8)))).decode()
  # No underscore: orbax also takes '<anything>_<digits>' for a step.
  name = f"{step}.damaged-{damage.slug}-{stamp}"
  target, n = directory / name, 1
  while target.exists():
    n += 1
    target = directory / f"{name}-{n}"
  # Every process reads the same files and reaches the same verdict; one of them renames, after
  # all have chosen the name.
  ocp.multihost.sync_global_processes(f"hebm_move_aside_{step}_named")
  if jax.process_index() == 0:
    (directory / str(step)).rename(target)
  ocp.multihost.sync_global_processes(f"hebm_move_aside_{step}_moved")
  return str(target)


def restore(manager: ocp.CheckpointManager, target: Any, config: ml_collections.ConfigDict,
            step: int | None = None) -> tuple[Any, int | None]:
  """Restores the latest good (or the given) checkpoint into the structure of `target`.

  With `step=None` the newest step is tried first. A step that cannot be read, does not match
  the digest written with it, or holds non-finite values in a floating leaf is renamed to
  `<step>.damaged-<reason>-<UTC time>` in the checkpoint directory (nothing is deleted), with one
  warning, and the next older step is tried. A checkpoint without a digest (written before
  digests) is accepted if it reads and is finite.

  Args:
    manager: from `make_manager`.
    target: a state (or its `jax.eval_shape`) giving the structure, shapes and dtypes.
    config: the current config, checked against the checkpoint's before any array is read.
    step: the step to restore (never replaced by another, nor moved); None for the latest good.

  Returns:
    (restored state with numpy leaves, step), or (target, None) when there is no checkpoint.

  Raises:
    IncompatibleCheckpointError: the checkpoint was written for another architecture or
      train-state layout, or not by hebm-jax; nothing is moved.
    DamagedCheckpointError: the given `step` is damaged (left in place), or, with `step=None`,
      every checkpoint is (all moved aside).
  """
  _drop_late_loop_callbacks()
  # Restored as host numpy arrays on every process; the caller places them on its devices.
  abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), x.dtype), jax.eval_shape(lambda: target))
  if step is not None:
    restored, damage = _read_verified(manager, step, abstract, config)
    if damage:
      where = os.path.join(str(manager.directory), str(step))
      raise DamagedCheckpointError(
          f"Checkpoint {where} is damaged: {damage.detail}. It was left in place; the work "
          f"directory holds steps {list(manager.all_steps())}.")
    return restored, step
  skipped = []
  for candidate in sorted(manager.all_steps(), reverse=True):
    restored, damage = _read_verified(manager, candidate, abstract, config)
    if not damage:
      return restored, candidate
    moved = _move_aside(manager, candidate, damage)
    # Without this, latest_step(), retention and the next save would still count the step.
    manager.reload()
    logging.warning("Checkpoint step %d is damaged (%s); moved it to %s and trying an older "
                    "one.", candidate, damage.detail, moved)
    skipped.append(f"step {candidate}: {damage.detail} (now {moved})")
  if skipped:
    raise DamagedCheckpointError(
        f"Every checkpoint in {manager.directory} is damaged:\n  " + "\n  ".join(skipped)
        + "\nThey were moved aside, not deleted. Start afresh (the directory no longer holds a "
        "step to resume), or rename one back to its step number to try it again.")
  return target, None
