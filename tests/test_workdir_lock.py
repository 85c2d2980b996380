"""One training writer per workdir: a second trainer is refused; killed holders and expired leases
do not block the workdir."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from hebm_jax import checkpointing, train, workdir_lock
from tests.conftest import compilation_cache_of_this_process, tiny_digits_config
from tests.test_fileio import bucket  # noqa: F401  pylint: disable=unused-import

REPO = pathlib.Path(__file__).resolve().parents[1]

_FLAGS = ["--config=configs/digits.py", "--config.model.z_dims=(2,2,4)",
          "--config.model.channels=(8,16,32)", "--config.prior.num_layers=2",
          "--config.prior.width=16", "--config.sampler.n_steps=5",
          "--config.train.batch_size=20", "--config.train.num_steps=12",
          "--config.checkpoint.every_steps=6", "--config.logging.log_every_steps=2",
          "--config.logging.image_every_steps=1000", "--config.eval.every_steps=1000",
          "--config.data.worker_count=0"]


def _flags_config():
  config = tiny_digits_config()
  config.train.num_steps = 12
  config.checkpoint.every_steps = 6
  config.logging.log_every_steps = 2
  config.logging.image_every_steps = 1000
  config.eval.every_steps = 1000
  config.data.worker_count = 0
  return config


def _snapshot(path):
  """Every entry under `path` with its size and modification time."""
  return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in pathlib.Path(path).rglob("*")}


def _final_state(workdir, config):
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  template = train.create_train_state(model, jax.random.PRNGKey(0), shape)
  manager = checkpointing.make_manager(str(workdir), 5, create=False)
  state, step = checkpointing.restore(manager, template, config)
  manager.close()
  return step, state


@pytest.mark.slow
def test_second_trainer_is_refused_and_the_first_finishes_as_alone(tmp_path):
  flags = [*_FLAGS, f"--config.train.compilation_cache={compilation_cache_of_this_process()}"]
  workdir = tmp_path / "run"
  first = subprocess.Popen([sys.executable, "main.py", f"--workdir={workdir}", *flags], cwd=REPO,
                           stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  seen = []
  for line in first.stderr:
    seen.append(line)
    if "step 4/12" in line:
      # Frozen, the first run still holds its lock and writes nothing while the second tries.
      first.send_signal(signal.SIGSTOP)
      break
  try:
    before = _snapshot(workdir)
    second = subprocess.run([sys.executable, "main.py", f"--workdir={workdir}", *flags], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    after = _snapshot(workdir)
  finally:
    first.send_signal(signal.SIGCONT)
  _, rest = first.communicate(timeout=300)
  assert first.returncode == 0, ("".join(seen) + rest)[-3000:]

  assert second.returncode == 2, second.stderr[-3000:]
  errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in second.stderr
  assert f"--workdir={workdir} is in use by another training run" in errors[0]
  assert f"pid {first.pid}, started 20" in errors[0]
  assert "config configs/digits.py" in errors[0] and f"kill {first.pid}" in errors[0]
  assert after == before  # nothing in the workdir touched

  # The first run ends as a run alone (in this process, with the same config) does.
  config = _flags_config()
  train.train_and_evaluate(config, str(tmp_path / "alone"))
  step_a, a = _final_state(workdir, config)
  step_b, b = _final_state(tmp_path / "alone", config)
  assert step_a == step_b == 12
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert (workdir / "train.lock").read_text() == ""  # released at the end


_HOLD = textwrap.dedent("""
    import sys, time
    from hebm_jax import workdir_lock
    workdir_lock.FileLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_lock_of_a_killed_run_is_free(tmp_path, caplog):
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirLockError, match=f"pid {holder.pid}, started"):
      workdir_lock.acquire(str(tmp_path), tiny_digits_config())
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The kernel released the lock; the file still names the killed run, and the next run says so.
  assert json.loads((tmp_path / "train.lock").read_text())["pid"] == holder.pid
  held = workdir_lock.acquire(str(tmp_path), tiny_digits_config())
  try:
    assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    assert f"pid {holder.pid}" in caplog.text and "ended without releasing its lock" in caplog.text
  finally:
    held.release()
  assert (tmp_path / "train.lock").read_text() == ""


def test_refused_trainer_writes_nothing_before_any_compile(tmp_path, monkeypatch):
  config = tiny_digits_config()
  config.data.worker_count = 0
  lock = workdir_lock.FileLock(str(tmp_path))
  lock.acquire()
  before = _snapshot(tmp_path)
  built = []  # the model is built (and then compiled) only after the lock is taken
  monkeypatch.setattr(train, "create_model", lambda *a, **k: built.append(a))
  try:
    with pytest.raises(workdir_lock.WorkdirLockError, match=f"pid {os.getpid()}"):
      train.train_and_evaluate(config, str(tmp_path))
    assert _snapshot(tmp_path) == before and not built
  finally:
    lock.release()


def test_only_process_0_locks(tmp_path, monkeypatch):
  lock = workdir_lock.FileLock(str(tmp_path / "held"))
  os.makedirs(tmp_path / "held")
  lock.acquire()
  try:
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    held = workdir_lock.acquire(str(tmp_path / "held"), tiny_digits_config())  # not refused
    held.release()
    os.makedirs(tmp_path / "free")
    workdir_lock.acquire(str(tmp_path / "free"), tiny_digits_config()).release()
    assert not (tmp_path / "free" / "train.lock").exists()
  finally:
    lock.release()


class _Clock:
  def __init__(self):
    self.now = 1_000_000.0

  def __call__(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds


class _Bucket:
  """An object store of one object: no locks, last write wins."""

  def __init__(self):
    self.text, self.path = None, "gs://bucket/run/train.lease"

  def read(self):
    return self.text

  def write(self, text):
    self.text = text

  def delete(self):
    self.text = None


def test_a_lease_expires_and_a_new_run_takes_over_on_a_simulated_bucket(caplog):
  clock, bucket = _Clock(), _Bucket()

  def lease():
    return workdir_lock.Lease(bucket, timeout_s=300, where="gs://bucket/run", clock=clock,
                              sleep=clock.sleep, heartbeat=False)

  first = lease()
  first.acquire()
  clock.now += 200
  assert first.renew()  # heartbeat at +202
  clock.now += 299
  with pytest.raises(workdir_lock.WorkdirLockError) as refused:
    lease().acquire()
  message = str(refused.value)
  assert f"pid {os.getpid()}, started" in message and "lease gs://bucket/run/train.lease" in message
  assert "lease_timeout_s=300 after its last heartbeat" in message
  assert workdir_lock._utc(1_000_000.0 + 202 + 300) in message  # when it expires
  assert json.loads(bucket.text)["token"] == first.info["token"]  # the refused run wrote nothing

  clock.now += 2  # the first run's heartbeats stopped (a lost host): the lease expires
  second = lease()
  second.acquire()
  assert "expired" in caplog.text and "this run takes over" in caplog.text
  assert not first.renew() and first.lost  # the old holder learns it lost the lease
  first.release()  # and leaves the new holder's lease alone
  assert json.loads(bucket.text)["token"] == second.info["token"]
  second.release()
  assert bucket.text is None


def test_two_runs_taking_a_free_lease_at_once_one_wins():
  clock, bucket = _Clock(), _Bucket()

  def sleep_while_the_other_writes(seconds):
    # The other run also found no lease, and wrote its own after this one's.
    bucket.write(json.dumps({**workdir_lock.holder_info(), "token": "other",
                             "heartbeat": clock()}))
    clock.sleep(seconds)

  first = workdir_lock.Lease(bucket, 300, where="gs://bucket/run", clock=clock,
                             sleep=sleep_while_the_other_writes, heartbeat=False)
  with pytest.raises(workdir_lock.WorkdirLockError, match="took the lease .* at the same moment"):
    first.acquire()
  assert json.loads(bucket.text)["token"] == "other"


def test_lease_object_in_a_mock_gcs_bucket(bucket):  # pylint: disable=redefined-outer-name
  url, local = bucket
  assert isinstance(workdir_lock.make_lock(url), workdir_lock.Lease)
  assert isinstance(workdir_lock.make_lock(str(local)), workdir_lock.FileLock)
  assert isinstance(workdir_lock.make_lock(str(local), "lease"), workdir_lock.Lease)
  clock = _Clock()

  def lease():
    return workdir_lock.Lease(workdir_lock.PathLeaseStore(f"{url}/{workdir_lock.LEASE_FILE}"), 60,
                              where=url, clock=clock, sleep=clock.sleep, heartbeat=False)

  first = lease()
  first.acquire()
  assert json.loads((local / "train.lease").read_text())["pid"] == os.getpid()
  with pytest.raises(workdir_lock.WorkdirLockError, match=f"lease {url}/train.lease"):
    lease().acquire()
  clock.now += 61
  second = lease()
  second.acquire()  # expired: taken over
  first.release()
  assert json.loads((local / "train.lease").read_text())["token"] == second.info["token"]
  second.release()
  assert not (local / "train.lease").exists()


def test_check_held_names_the_run_that_took_the_lease_over():
  clock, bucket = _Clock(), _Bucket()
  lease = workdir_lock.Lease(bucket, 300, where="gs://bucket/run", clock=clock, sleep=clock.sleep,
                             heartbeat=False)
  lease.acquire()
  key = workdir_lock.fileio.absolute("gs://bucket/run")
  workdir_lock._HELD[key] = workdir_lock.Held(key, lease)
  try:
    workdir_lock.check_held("gs://bucket/run", 500)  # still ours: no error
    bucket.write(json.dumps({"host": "other-host", "pid": 4321, "token": "theirs",
                             "heartbeat": clock()}))
    with pytest.raises(workdir_lock.WorkdirLockError) as lost:
      workdir_lock.check_held("gs://bucket/run", 1000)
    assert "lost its lease to host other-host, pid 4321" in str(lost.value)
    assert "stops at step 1000 without saving" in str(lost.value)
    assert lease.lost
  finally:
    workdir_lock._HELD.pop(key).release()
  assert json.loads(bucket.text)["token"] == "theirs"  # the new holder's lease is left alone
  workdir_lock.check_held("gs://bucket/run", 1000)  # a workdir this process does not hold: no-op


def test_a_trainer_that_lost_its_lease_stops_before_overwriting_a_checkpoint(tmp_path,
                                                                               monkeypatch):
  config = _flags_config()
  config.train.workdir_lock = "lease"
  real_save = checkpointing.save

  def save_then_lose_the_lease(manager, step, state, cfg):
    real_save(manager, step, state, cfg)
    # Another run takes the workdir over (this run's heartbeats stalled past the timeout).
    (tmp_path / workdir_lock.LEASE_FILE).write_text(json.dumps(
        {"host": "other-host", "pid": 4321, "token": "theirs", "heartbeat": 0.0}))

  monkeypatch.setattr(checkpointing, "save", save_then_lose_the_lease)
  with pytest.raises(workdir_lock.WorkdirLockError, match="stops at step 12 without saving"):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  manager = checkpointing.make_manager(str(tmp_path), 5, create=False)
  assert list(manager.all_steps()) == [6]  # step 12 was not written over the other run's
  manager.close()
  assert json.loads((tmp_path / workdir_lock.LEASE_FILE).read_text())["token"] == "theirs"


@pytest.mark.parametrize("field, value, match", [
    ("train.workdir_lock", "nfs", "config.train.workdir_lock: unknown lock 'nfs'"),
    ("train.lease_timeout_s", 0, "config.train.lease_timeout_s: must be a positive number"),
    ("eval.follow_poll_s", -1.0, "config.eval.follow_poll_s: must be a positive number"),
    ("eval.follow_timeout_s", -5, "config.eval.follow_timeout_s: must be a non-negative number"),
])
def test_bad_lock_and_follow_fields_are_named(field, value, match):
  from hebm_jax.config_validation import ConfigError, validate_config  # pylint: disable=g-import-not-at-top
  config = tiny_digits_config()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=match):
    validate_config(config)
