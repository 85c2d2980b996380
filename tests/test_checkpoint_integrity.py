"""Checkpoint integrity: digests, falling back past damaged checkpoints, failed saves."""

from __future__ import annotations

import asyncio
import gc
import errno
import hashlib
import logging
import os
import pathlib
import re
import shutil
import sys
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hebm_jax import checkpointing, train
from tests.conftest import tiny_digits_config


@pytest.fixture(scope="module")
def setup():
  """The tiny model's config, two states with different parameters, and a restore target."""
  config = tiny_digits_config()
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  states = [train.create_train_state(model, jax.random.PRNGKey(s), shape) for s in (0, 1)]
  return config, states[0], states[1], jax.eval_shape(lambda: states[0])


def _save(workdir: pathlib.Path, config, steps_and_states, max_to_keep: int = 5):
  manager = checkpointing.make_manager(str(workdir), max_to_keep)
  for step, state in steps_and_states:
    checkpointing.save(manager, step, state.replace(step=step), config)
  manager.wait_until_finished()
  return manager


def _ckpt(workdir: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(checkpointing.checkpoint_dir(str(workdir)))


def _raw_read(workdir: pathlib.Path, step: int, target):
  """The step's state as orbax reads it, unchecked; None when orbax cannot read it."""
  manager = checkpointing.make_manager(str(workdir), 5)
  try:
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), target))))["state"]
  except Exception:  # pylint: disable=broad-exception-caught
    return None
  finally:
    manager.close()


def _damage_largest_data_file(workdir: pathlib.Path, step: int, target, damage) -> str:
  """Damages the largest data file under `<step>/state` that the checkpoint reads.

  Orbax's OCDBT writers may leave data files the checkpoint never reads (their sizes and names
  change from run to run); damaging one of those would damage nothing, so each file, largest
  first, is damaged (`damage(bytes) -> bytes`) and kept so only if a plain orbax read notices.

  Returns:
    What a plain orbax read then sees: 'fails' or 'reads other values'.
  """
  intact = _raw_read(workdir, step, target)
  files = [pathlib.Path(root) / name
           for root, _, names in os.walk(_ckpt(workdir) / str(step) / "state") for name in names
           if pathlib.Path(root).name == "d"]
  for f in sorted(files, key=lambda f: f.stat().st_size, reverse=True):
    original = f.read_bytes()
    f.write_bytes(damage(original))
    damaged = _raw_read(workdir, step, target)
    if damaged is None:
      return "fails"
    if any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(intact),
                                                     jax.tree.leaves(damaged))):
      return "reads other values"
    f.write_bytes(original)
  raise AssertionError("no data file of the checkpoint is read")


def _half(data: bytes) -> bytes:
  return data[:len(data) // 2]


def _flip64(data: bytes) -> bytes:
  out = bytearray(data)
  mid = len(out) // 2
  out[mid:mid + 64] = bytes(b ^ 0xFF for b in out[mid:mid + 64])
  return bytes(out)


def _truncate(workdir, step, target):
  assert _damage_largest_data_file(workdir, step, target, _half) == "fails"


def _delete_state(workdir, step):
  shutil.rmtree(_ckpt(workdir) / str(step) / "state")


def _nan_like(state):
  return jax.tree.map(
      lambda x: np.full(np.shape(x), np.nan, np.asarray(x).dtype)
      if np.issubdtype(np.asarray(x).dtype, np.floating) else x, state)


def _contents(directory: pathlib.Path) -> dict[str, str]:
  return {str(f.relative_to(directory)): hashlib.sha256(f.read_bytes()).hexdigest()
          for f in sorted(directory.rglob("*")) if f.is_file()}


def _damaged_dirs(workdir, step) -> list[pathlib.Path]:
  return sorted(_ckpt(workdir).glob(f"{step}.damaged-*"))


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _warnings(caplog) -> list[str]:
  # orbax warns when a save waited on the previous one: a matter of load, not of the restore.
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
          and not r.getMessage().startswith("Waiting for previous save to complete")]


@pytest.mark.parametrize("fault, reason", [
    ("truncate", r"unreadable: \w+"),
    # Flipped bytes that still decompress read silently, and only the digest can tell; others
    # fail to read. Which one a plain read sees first can differ from what restore then sees:
    # orbax keeps the OCDBT tree nodes it has read in a process-wide cache.
    ("flip", r"sha256 mismatch in \S+|unreadable: \w+"),
    ("nan", r"non-finite values in \S+"),
    ("delete_state", r"unreadable: \w+"),
], ids=["truncated", "flipped", "nan", "no_state"])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_older_one_restored(
    setup, tmp_path, caplog, fault, reason):
  config, s2, s4, target = setup
  _save(tmp_path, config, [(2, s2), (4, _nan_like(s4) if fault == "nan" else s4)]).close()
  if fault == "flip":
    _damage_largest_data_file(tmp_path, 4, target, _flip64)
  elif fault == "truncate":
    _truncate(tmp_path, 4, target)
  elif fault == "delete_state":
    _delete_state(tmp_path, 4)

  caplog.set_level(logging.INFO)
  manager = checkpointing.make_manager(str(tmp_path), 5)
  restored, step = checkpointing.restore(manager, target, config)

  if fault == "flip" and step == 4:
    # The probe read above left step 4's intact tree nodes in orbax's process-wide cache, so this
    # process read the intact values (a fresh process would not): what came back must then be
    # exactly the saved state, verified against its digest, never damaged values.
    _assert_same(restored.params, s4.params)
    manager.close()
    return
  assert step == 2
  _assert_same(restored.params, s2.params)
  warnings = _warnings(caplog)
  assert len(warnings) == 1, warnings
  assert "step 4" in warnings[0]
  assert re.search(reason, warnings[0]), warnings[0]
  assert not (_ckpt(tmp_path) / "4").exists()
  moved = _damaged_dirs(tmp_path, 4)
  assert len(moved) == 1 and str(moved[0]) in warnings[0]
  assert manager.all_steps() == [2] and manager.latest_step() == 2
  manager.close()


def test_a_fallback_prints_no_event_loop_tracebacks(setup, tmp_path, caplog, capfd, monkeypatch):
  config, s2, s4, target = setup
  _save(tmp_path, config, [(2, s2), (4, s4)]).close()
  _truncate(tmp_path, 4, target)
  time.sleep(1.0)  # the late callbacks of the helper's own failed read: not this test's
  reported = []
  # Below the filter (installed by restore), as pytest's own hook is: sees what gets through.
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  caplog.set_level(logging.INFO)
  manager = checkpointing.make_manager(str(tmp_path), 5)
  _, step = checkpointing.restore(manager, target, config)
  time.sleep(1.0)  # the late read callbacks arrive after restore has returned
  manager.close()

  assert step == 2
  assert len(_warnings(caplog)) == 1
  out, err = capfd.readouterr()
  assert "Event loop is closed" not in out + err + caplog.text
  # Usually ~150 late callbacks were dropped here, but not in every run (it depends on which
  # reads are still in flight): the next test checks the filter itself.
  assert not [u for u in reported if "Event loop is closed" in str(u.exc_value)]


def _unraisable(error: BaseException) -> types.SimpleNamespace:
  return types.SimpleNamespace(exc_type=type(error), exc_value=error,
                               exc_traceback=error.__traceback__, err_msg=None, object=None)


def test_only_callbacks_into_a_closed_event_loop_are_dropped(monkeypatch):
  loop = asyncio.new_event_loop()
  loop.close()
  with pytest.raises(RuntimeError, match="Event loop is closed") as late:
    loop.call_soon_threadsafe(lambda: None)
  with pytest.raises(RuntimeError, match="Event loop is closed") as elsewhere:
    raise RuntimeError("Event loop is closed")
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  checkpointing._drop_late_loop_callbacks()  # pylint: disable=protected-access
  others = [_unraisable(elsewhere.value), _unraisable(ValueError("a real error"))]
  for unraisable in [_unraisable(late.value)] + others:
    sys.unraisablehook(unraisable)
  assert reported == others


def test_unretrieved_read_errors_of_a_damaged_checkpoint_are_not_logged(caplog):
  """A failed read's sibling reads die un-awaited; asyncio then logs "Future exception was never
  retrieved" or, for a read still wrapped in a Task, "Task exception ..." with a traceback. Both
  are dropped for read errors (the restore names the damage once); any other error is kept."""

  async def fail(message):
    raise ValueError(message)

  caplog.set_level(logging.ERROR, logger="asyncio")
  loop = asyncio.new_event_loop()
  tasks = [loop.create_task(fail(m)) for m in (
      'OUT_OF_RANGE: Error reading "params.kernel/0.0" in OCDBT database', "a real error")]
  future = loop.create_future()
  future.set_exception(ValueError("DATA_LOSS: Error opening the state"))
  loop.run_until_complete(asyncio.sleep(0))
  loop.close()
  del tasks, future
  gc.collect()
  logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert len(logged) == 1, logged
  assert logged[0].startswith("Task exception was never retrieved") and "a real error" in logged[0]


def test_when_every_checkpoint_is_damaged_all_are_named_and_none_deleted(setup, tmp_path):
  config, s2, s4, target = setup
  _save(tmp_path, config, [(2, s2), (4, s4)]).close()
  _truncate(tmp_path, 4, target)
  _delete_state(tmp_path, 2)
  before = {step: _contents(_ckpt(tmp_path) / str(step)) for step in (2, 4)}

  manager = checkpointing.make_manager(str(tmp_path), 5)
  with pytest.raises(checkpointing.DamagedCheckpointError,
                     match=r"(?s)Every checkpoint.*step 4: unreadable.*step 2: unreadable"):
    checkpointing.restore(manager, target, config)
  manager.close()
  for step in (2, 4):
    (moved,) = _damaged_dirs(tmp_path, step)
    assert _contents(moved) == before[step]
  assert not [p for p in _ckpt(tmp_path).iterdir() if p.name.isdigit()]


def test_an_explicitly_requested_damaged_step_raises_and_stays(setup, tmp_path):
  config, s2, s4, target = setup
  _save(tmp_path, config, [(2, s2), (4, s4)]).close()
  _truncate(tmp_path, 4, target)
  before = _contents(_ckpt(tmp_path))

  manager = checkpointing.make_manager(str(tmp_path), 5)
  with pytest.raises(checkpointing.DamagedCheckpointError,
                     match=r"checkpoints/4 is damaged: unreadable(.|\n)*left in place"):
    checkpointing.restore(manager, target, config, step=4)
  manager.close()
  assert _contents(_ckpt(tmp_path)) == before
  assert not _damaged_dirs(tmp_path, 4)


def test_an_architecture_mismatch_is_not_damage(setup, tmp_path):
  config, s2, s4, target = setup
  _save(tmp_path, config, [(2, s2), (4, s4)]).close()
  before = _contents(_ckpt(tmp_path))
  other = tiny_digits_config()
  other.model.z_dims = (2, 2, 5)
  manager = checkpointing.make_manager(str(tmp_path), 5)
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match=r"model\.z_dims") as info:
    checkpointing.restore(manager, target, other)
  manager.close()
  assert not isinstance(info.value, checkpointing.DamagedCheckpointError)
  assert _contents(_ckpt(tmp_path)) == before


@pytest.mark.parametrize("with_digest", [True, False])
def test_another_train_state_layout_is_not_damage(setup, tmp_path, with_digest):
  """As after a change of the optimiser chain: every step fails to read, none is damaged."""
  config, s2, s4, _ = setup
  _save(tmp_path, config, [(2, s2), (4, s4)]).close()
  if not with_digest:  # checked against orbax's own metadata instead
    for step in (2, 4):
      shutil.rmtree(_ckpt(tmp_path) / str(step) / "digest")
  before = _contents(_ckpt(tmp_path))
  other = jax.eval_shape(lambda: s2.replace(
      opt_state_prior=(np.zeros((), np.int32), s2.opt_state_prior)))
  manager = checkpointing.make_manager(str(tmp_path), 5)
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r"another layout(.|\n)*opt_state_prior") as info:
    checkpointing.restore(manager, other, config)
  manager.close()
  assert not isinstance(info.value, checkpointing.DamagedCheckpointError)
  assert _contents(_ckpt(tmp_path)) == before


def test_a_checkpoint_without_a_digest_restores(setup, tmp_path, caplog):
  config, s2, s4, target = setup
  _save(tmp_path, config, [(2, s2), (4, s4)]).close()
  shutil.rmtree(_ckpt(tmp_path) / "4" / "digest")  # as written before digests existed

  caplog.set_level(logging.INFO)
  manager = checkpointing.make_manager(str(tmp_path), 5)
  restored, step = checkpointing.restore(manager, target, config)
  manager.close()
  assert step == 4
  _assert_same(restored.params, s4.params)
  assert not _warnings(caplog)
  assert len([r for r in caplog.records if "has no digest" in r.getMessage()]) == 1


def test_digests_are_deterministic_and_name_the_changed_leaf(setup, tmp_path):
  config, s2, _, _ = setup
  digest = checkpointing.state_digest(s2)
  assert digest == checkpointing.state_digest(jax.tree.map(np.array, s2))
  assert digest["version"] == checkpointing.DIGEST_VERSION
  leaves = jax.tree_util.tree_flatten_with_path(s2)[0]
  changed_path, changed_leaf = next((p, x) for p, x in leaves
                                    if np.issubdtype(np.asarray(x).dtype, np.floating))
  bumped = np.array(changed_leaf).copy()
  bumped.flat[0] += 1.0
  other = checkpointing.state_digest(jax.tree_util.tree_unflatten(
      jax.tree.structure(s2), [bumped if p == changed_path else x for p, x in leaves]))
  differing = [p for p in digest["leaves"] if digest["leaves"][p] != other["leaves"][p]]
  assert differing == [jax.tree_util.keystr(changed_path)]

  # What save writes is the digest of the state it saves.
  manager = _save(tmp_path, config, [(2, s2)])
  written = manager.restore(2, args=ocp.args.Composite(digest=ocp.args.JsonRestore()))["digest"]
  manager.close()
  assert written == checkpointing.state_digest(
      jax.device_put(s2.replace(step=2), checkpointing.local_replicated_sharding()))


def test_retention_counts_only_good_checkpoints_after_a_fallback(setup, tmp_path):
  config, s2, s4, target = setup
  manager = _save(tmp_path, config, [(2, s2), (4, s4), (6, s2)], max_to_keep=3)
  _truncate(tmp_path, 6, target)

  _, step = checkpointing.restore(manager, target, config)
  assert step == 4 and manager.latest_step() == 4
  for new_step in (6, 8):
    assert checkpointing.save(manager, new_step, s4.replace(step=new_step), config)
    manager.wait_until_finished()
  manager.close()
  assert sorted(int(p.name) for p in _ckpt(tmp_path).iterdir() if p.name.isdigit()) == [4, 6, 8]
  assert len(_damaged_dirs(tmp_path, 6)) == 1


def test_a_read_only_checkpoint_directory_fails_the_save_clearly(setup, tmp_path):
  config, s2, s4, target = setup
  manager = _save(tmp_path, config, [(2, s2)])
  directory = _ckpt(tmp_path)
  os.chmod(directory, 0o500)
  try:
    if os.access(directory, os.W_OK):
      pytest.skip("chmod does not stop this user (root) from writing")
    with pytest.raises(checkpointing.CheckpointSaveError,
                       match=rf"step 4 to {directory}: PermissionError.*Permission denied"):
      checkpointing.save(manager, 4, s4.replace(step=4), config)
      manager.wait_until_finished()
  finally:
    os.chmod(directory, 0o700)
  manager.close()
  manager = checkpointing.make_manager(str(tmp_path), 5)
  restored, step = checkpointing.restore(manager, target, config)
  manager.close()
  assert step == 2
  _assert_same(restored.params, s2.params)


def test_a_write_error_in_the_background_becomes_a_save_error(setup, tmp_path, monkeypatch):
  """A full disk as orbax reports it: from its background thread, at the next wait."""
  config, s2, s4, _ = setup
  manager = _save(tmp_path, config, [(2, s2)])
  real_wait = ocp.CheckpointManager.wait_until_finished

  def failing_wait(self):
    real_wait(self)
    raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device")

  checkpointing.save(manager, 4, s4.replace(step=4), config)
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failing_wait)
  with pytest.raises(checkpointing.CheckpointSaveError,
                     match=rf"step 4 to {_ckpt(tmp_path)}: ValueError.*No space left") as info:
    manager.wait_until_finished()
  assert isinstance(info.value, OSError)
  monkeypatch.undo()
  manager.close()


def test_an_unwritable_directory_is_refused_before_orbax_starts(setup, tmp_path, monkeypatch):
  config, s2, s4, _ = setup
  manager = _save(tmp_path, config, [(2, s2)])
  real_makedirs = os.makedirs

  def full_disk(path, *args, **kwargs):
    if ".write-probe-" in str(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real_makedirs(path, *args, **kwargs)

  monkeypatch.setattr(os, "makedirs", full_disk)
  with pytest.raises(checkpointing.CheckpointSaveError,
                     match=rf"step 4 to {_ckpt(tmp_path)}: OSError.*No space left on device"):
    checkpointing.save(manager, 4, s4.replace(step=4), config)
  monkeypatch.undo()
  manager.wait_until_finished()
  manager.close()
  assert sorted(p.name for p in _ckpt(tmp_path).iterdir()) == ["2"]
