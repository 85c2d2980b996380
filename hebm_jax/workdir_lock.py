"""One training writer per workdir: a lock that process 0 holds for the life of a training run.

Two trainers on one workdir (a requeued job whose first copy is still shutting down, a command
run twice) would both write checkpoints, retention deletions, TensorBoard files and
`run_state.json` into it. `acquire` stops the second one before it compiles or writes anything,
with one line naming the holder (host, pid, start time, config file).

  * Local and NFS workdirs: an OS file lock (`fcntl.flock`) on `<workdir>/train.lock`. The kernel
    releases it when the holder ends, however it ends (SIGKILL included), so a killed run never
    blocks the workdir. The file stays; it holds the holder's description while held.
  * Object-store workdirs (gs://, s3://), which have no locks: a lease, the small JSON object
    `<workdir>/train.lease`, which the holder rewrites every `lease_timeout_s / 4` seconds (a
    heartbeat). A lease whose heartbeat is older than `config.train.lease_timeout_s` has expired:
    the next run takes it over and says so. Hosts' clocks must agree to well within the timeout.
    A run whose lease was taken over (its heartbeats stalled) learns it at its next checkpoint
    (`check_held`) and stops there without saving, so it never overwrites the new holder's work.
    An object store offers no compare-and-swap through `etils.epath`, so two runs starting within
    the same second are told apart by writing, waiting `settle_s` and reading back: the one whose
    write is not there stops.

`config.train.workdir_lock`: 'auto' (the above, by path), 'file' or 'lease' (e.g. a FUSE mount of
a bucket, which is a local path without working locks). Every run on a workdir must use the same.
Only training locks; `--mode=eval`, `sample` and `summary` only read. In a multi-process job only
process 0 locks, and the others stop with it when it cannot.
"""

from __future__ import annotations

import datetime
import errno
import functools
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Protocol

from absl import logging
from etils import epath

from hebm_jax import fileio

LOCK_FILE = "train.lock"
LEASE_FILE = "train.lease"
MODES = ("auto", "file", "lease")


class WorkdirLockError(RuntimeError):
  """Another training run holds the workdir, or its lock cannot be taken (a user error: one
  line, exit status 2)."""


def _utc(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      "%Y-%m-%dT%H:%M:%SZ")


def _config_file(argv: list[str]) -> str:
  for arg in argv:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return "(none: started from Python)"


def holder_info(now: float | None = None) -> dict:
  """This process as a lock holder: host, pid, start time, config file and command line."""
  now = time.time() if now is None else now
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": _utc(now),
          "config": _config_file(sys.argv), "command": " ".join(sys.argv)}


def describe(info: dict | None) -> str:
  """'host H, pid P, started T, config C' of a holder's description (or that it has none)."""
  if not info:
    return "a run that has not yet written its name (it is just starting)"
  return (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started "
          f"{info.get('started', '?')}, config {info.get('config', '?')}")


def _parse(text: str | None) -> dict | None:
  if not text or not text.strip():
    return None
  try:
    info = json.loads(text)
  except ValueError:
    return {"host": "?", "pid": "?", "started": "?", "config": f"(unreadable: {text[:40]!r})"}
  return info if isinstance(info, dict) else None


class FileLock:
  """`fcntl.flock` on `<workdir>/train.lock` (local and NFS paths)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock or raises `WorkdirLockError`; nothing is written unless it is taken."""
    import fcntl  # pylint: disable=g-import-not-at-top

    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirLockError(f"--workdir={self.workdir}: cannot open the lock file {self.path}: "
                             f"{e.strerror or e}.") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _parse(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        pid = holder.get("pid", "<pid>") if holder else "<pid>"
        host = holder.get("host", "its host") if holder else "its host"
        raise WorkdirLockError(
            f"--workdir={self.workdir} is in use by another training run: {describe(holder)} "
            f"(lock {self.path}). Let it finish, or stop it (`kill {pid}` on {host}: it saves a "
            "checkpoint and exits), then run this command again to resume; or give this run "
            "another --workdir.") from None
      raise WorkdirLockError(
          f"--workdir={self.workdir}: cannot lock {self.path}: {e.strerror or e}. If this file "
          "system has no working locks, pass --config.train.workdir_lock=lease.") from None
    previous = _parse(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
    if previous:
      logging.warning("The previous training run on %s (%s) ended without releasing its lock "
                      "(killed or lost); the kernel released it, and this run takes over.",
                      self.workdir, describe(previous))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder_info()) + "\n").encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    """Empties the file (a clean end) and unlocks; the file itself stays (deleting a lock file
    races with a run that has just opened it)."""
    if self._fd is None:
      return
    import fcntl  # pylint: disable=g-import-not-at-top
    try:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
    finally:
      os.close(self._fd)
      self._fd = None


class LeaseStore(Protocol):
  """Where a lease lives: one small object (a bucket's object, or a file for tests)."""

  def read(self) -> str | None: ...
  def write(self, text: str) -> None: ...
  def delete(self) -> None: ...


class PathLeaseStore:
  """A lease object at an `etils.epath` path (gs://..., s3://..., or a local file)."""

  def __init__(self, path: str):
    self.path = path

  def read(self) -> str | None:
    try:
      return epath.Path(self.path).read_text()
    except FileNotFoundError:
      return None

  def write(self, text: str) -> None:
    fileio.write_text(self.path, text)

  def delete(self) -> None:
    epath.Path(self.path).unlink(missing_ok=True)


class Lease:
  """A lease with a heartbeat in a `LeaseStore`.

  Args:
    store: where the lease object lives.
    timeout_s: a lease whose last heartbeat is older than this has expired.
    where: the workdir, for messages.
    clock: wall-clock seconds (time.time; injectable for tests).
    sleep: waits `settle_s` between writing and reading back.
    settle_s: seconds between writing the lease and reading it back.
    heartbeat: whether `acquire` starts the thread that renews the lease every timeout_s / 4
      (tests call `renew` themselves).
  """

  def __init__(self, store: LeaseStore, timeout_s: float, where: str = "",
               clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
               settle_s: float = 2.0, heartbeat: bool = True):
    self.store, self.timeout_s, self.where = store, float(timeout_s), where
    self.clock, self.sleep, self.settle_s, self.heartbeat = clock, sleep, settle_s, heartbeat
    self.info: dict[str, Any] | None = None
    self.lost = False
    self.taken_by: dict | None = None  # the stored lease that replaced this run's, once lost
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _name(self) -> str:
    return getattr(self.store, "path", "the lease")

  def acquire(self) -> None:
    """Takes the lease (a free or expired one) or raises `WorkdirLockError`."""
    now = self.clock()
    current = _parse(self.store.read())
    if current and now - float(current.get("heartbeat", 0.0)) < self.timeout_s:
      expires = float(current["heartbeat"]) + self.timeout_s
      raise WorkdirLockError(
          f"--workdir={self.where} is in use by another training run: {describe(current)} "
          f"(lease {self._name()}, last heartbeat {_utc(float(current['heartbeat']))}). Let it "
          f"finish, or stop it, then run this command again to resume; if that run is gone, its "
          f"lease expires at {_utc(expires)} (config.train.lease_timeout_s={self.timeout_s:g} "
          "after its last heartbeat) and a new run takes over then; or give this run another "
          "--workdir.")
    info = {**holder_info(now), "token": uuid.uuid4().hex, "heartbeat": now,
            "timeout_s": self.timeout_s}
    self.store.write(json.dumps(info))
    self.sleep(self.settle_s)
    back = _parse(self.store.read())
    if not back or back.get("token") != info["token"]:
      raise WorkdirLockError(
          f"--workdir={self.where}: another training run took the lease {self._name()} at the "
          f"same moment: {describe(back)}. Let it run, or stop it and run this command again.")
    if current:
      logging.warning("The lease of the previous training run on %s (%s) expired (last "
                      "heartbeat %s, more than config.train.lease_timeout_s=%g s ago); this run "
                      "takes over.", self.where, describe(current),
                      _utc(float(current.get("heartbeat", 0.0))), self.timeout_s)
    self.info = info
    if self.heartbeat:
      self._thread = threading.Thread(target=self._beat, name="hebm-lease-heartbeat", daemon=True)
      self._thread.start()

  def renew(self) -> bool:
    """Rewrites the lease with a new heartbeat; False (and an error logged) once it was lost."""
    if self.info is None or self.lost:
      return False
    current = _parse(self.store.read())
    if not self._is_ours(current):
      logging.error("Lost the lease %s of %s to %s: this run's heartbeats did not land for "
                    "config.train.lease_timeout_s=%g s, so another run took over; stop this one.",
                    self._name(), self.where, describe(current), self.timeout_s)
      return False
    self.info["heartbeat"] = self.clock()
    self.store.write(json.dumps(self.info))
    return True

  def still_ours(self) -> bool:
    """Whether the stored lease is still this run's (read now; a failed read counts as yes, since
    the heartbeat retries and the save that follows will report a store that is down)."""
    if self.info is None or self.lost:
      return False
    try:
      current = _parse(self.store.read())
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Could not read the lease %s to check it: %s", self._name(), e)
      return True
    return self._is_ours(current)

  def _is_ours(self, current: dict | None) -> bool:
    """Whether `current` (the stored lease, parsed) is this run's; if not, the lease is lost and
    `taken_by` is what the store holds instead."""
    if current and current.get("token") == self.info["token"]:
      return True
    self.lost, self.taken_by = True, current
    return False

  def _beat(self) -> None:
    while not self._stop.wait(self.timeout_s / 4):
      try:
        if not self.renew():
          return
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Could not renew the lease %s (retrying): %s", self._name(), e)

  def release(self) -> None:
    """Stops the heartbeat and deletes the lease if it is still this run's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
      self._thread = None
    if self.info is not None and not self.lost:
      current = _parse(self.store.read())
      if current and current.get("token") == self.info["token"]:
        self.store.delete()
    self.info = None


# Locks this process holds, by absolute workdir: a call of `acquire` for a workdir this process
# already holds (after a run that stopped on an error before releasing) gets the same lock.
_HELD: dict[str, "Held"] = {}


class Held:
  """A held workdir lock; `release` ends it (also at process exit: the kernel, or expiry)."""

  def __init__(self, key: str, lock: FileLock | Lease | None):
    self.key, self.lock = key, lock

  def release(self) -> None:
    if self.lock is not None:
      self.lock.release()
      self.lock = None
    _HELD.pop(self.key, None)


def make_lock(workdir: str, mode: str = "auto", lease_timeout_s: float = 300.0) -> FileLock | Lease:
  """The lock for `workdir`: a `FileLock` for local paths, a `Lease` for URLs (mode 'auto')."""
  if mode == "file" or (mode == "auto" and not fileio.is_remote(workdir)):
    return FileLock(workdir)
  return Lease(PathLeaseStore(os.path.join(workdir, LEASE_FILE)), lease_timeout_s, where=workdir)


def acquire(workdir: str, config) -> Held:
  """Makes this run the workdir's one training writer (call once the workdir exists).

  Process 0 takes the lock; in a multi-process job the others learn whether it did, and all
  raise when it did not.

  Raises:
    WorkdirLockError: another run holds the workdir (naming it and how to proceed).
  """
  import jax  # pylint: disable=g-import-not-at-top
  key = fileio.absolute(workdir)
  held, error = _HELD.get(key), None
  if held is None and jax.process_index() == 0:
    lock = make_lock(workdir, config.train.get("workdir_lock", "auto"),
                     config.train.get("lease_timeout_s", 300.0))
    try:
      lock.acquire()
      held = _HELD[key] = Held(key, lock)
    except WorkdirLockError as e:
      error = e
  if jax.process_count() > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      raise WorkdirLockError(
          f"--workdir={workdir} is in use by another training run (process 0 names it); this "
          f"process {jax.process_index()} stops with process 0.")
  if error is not None:
    raise error
  return held or Held(key, None)


def check_held(workdir: str, step: int) -> None:
  """Raises unless this run still holds `workdir`; call before writing a checkpoint.

  A file lock cannot be lost while the process lives. A lease can: when this run's heartbeats
  stopped landing for `train.lease_timeout_s` (a stalled host, a partitioned network), another run
  may have taken the workdir over, and this run's next checkpoint would overwrite the other's.
  In a multi-process job every process calls this at the same step (checkpoint steps are the
  same everywhere) and all learn process 0's answer, so they stop together.

  Raises:
    WorkdirLockError: the lease was lost (naming the new holder); nothing from `step` is saved.
  """
  import jax  # pylint: disable=g-import-not-at-top
  held = _HELD.get(fileio.absolute(workdir))
  lock = held.lock if held is not None else None
  lost = isinstance(lock, Lease) and not lock.still_ours()
  if jax.process_count() > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    lost = bool(multihost_utils.broadcast_one_to_all(np.int32(lost)))
  if lost:
    holder = describe(lock.taken_by) if isinstance(lock, Lease) else "another run"
    raise WorkdirLockError(
        f"--workdir={workdir}: this training run lost its lease to {holder} (its heartbeats did "
        f"not land for config.train.lease_timeout_s), so it stops at step {step} without saving: "
        "its checkpoint would overwrite the other run's. The other run now owns the workdir; "
        "let it train, or stop it and run this command again to resume from the last checkpoint.")


def release(workdir: str) -> None:
  """Releases the lock this process holds on `workdir` (nothing if it holds none)."""
  held = _HELD.get(fileio.absolute(workdir))
  if held is not None:
    held.release()


def released_on_exit(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Decorates `fn(config, workdir, ...)`, which calls `acquire`: the lock it took is released
  when it returns or raises, whatever the point it raised at."""

  @functools.wraps(fn)
  def wrapper(config, workdir: str, *args, **kwargs):
    try:
      return fn(config, workdir, *args, **kwargs)
    finally:
      release(workdir)

  return wrapper
