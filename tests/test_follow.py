"""`--mode=eval --config.eval.follow=True` beside a (simulated) live training run."""

import json
import pathlib
import shutil

import jax
import pytest

from hebm_jax import checkpointing, train, workdir_lock
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import driver, follow
from tests.conftest import tiny_digits_config


def _config():
  config = tiny_digits_config()
  config.data.worker_count = 0
  config.train.num_steps = 6
  config.eval.metrics = ("mse",)
  config.eval.mse.num_images = 40
  config.eval.follow = True
  config.eval.follow_poll_s = 5.0
  return config


class _Trainer:
  """Writes a checkpoint each time the follower waits (orbax's retention deleting old ones),
  and advances the follower's clock by the wait."""

  def __init__(self, config, workdir, steps, max_to_keep=2):
    self.config, self.steps, self.now = config, list(steps), 0.0
    self.model = train.create_model(config, steps_per_epoch=10)
    self.manager = checkpointing.make_manager(str(workdir), max_to_keep)

  def save(self, step):
    shape = (self.config.data.image_size, self.config.data.image_size, self.config.data.channels)
    state = train.create_train_state(self.model, jax.random.PRNGKey(step), shape)
    checkpointing.save(self.manager, step, state.replace(step=step), self.config)
    self.manager.wait_until_finished()

  def sleep(self, seconds):
    self.now += seconds
    if self.steps:
      self.save(self.steps.pop(0))

  def clock(self):
    return self.now


def _evaluated_steps(monkeypatch):
  steps = []
  original = driver.Session.evaluate

  def evaluate(self, state, step, *args):
    steps.append(step)
    return original(self, state, step, *args)

  monkeypatch.setattr(driver.Session, "evaluate", evaluate)
  return steps


def _tensorboard_steps(eval_dir, tag="eval/mse/mse"):
  """The steps of `tag`'s scalars in eval_dir's event files, read with tensorboard (no TensorFlow:
  it is not installed)."""
  from tests.test_summary_writer import _read  # pylint: disable=g-import-not-at-top
  return sorted(step for step, _ in _read(eval_dir).get(tag, ("", []))[1])


def test_follower_evaluates_each_checkpoint_once_and_resumes_after_a_restart(tmp_path,
                                                                           monkeypatch):
  config = _config()
  config.eval.follow_timeout_s = 12.0
  workdir = tmp_path / "run"
  evaluated = _evaluated_steps(monkeypatch)
  trainer = _Trainer(config, workdir, [2, 4])
  # The trainer holds its lock throughout: evaluation takes none.
  lock = workdir_lock.FileLock(str(workdir))
  lock.acquire()
  # A checkpoint being written (orbax's temporary name): neither evaluated nor touched.
  writing = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1700000000000000"
  (writing / "state").mkdir(parents=True)
  (writing / "state" / "partial").write_bytes(b"\0" * 10)

  first = follow.follow(config, str(workdir), sleep=trainer.sleep, clock=trainer.clock)
  assert sorted(first) == evaluated == [2, 4]  # then no checkpoint for 12 s: stopped
  assert (writing / "state" / "partial").read_bytes() == b"\0" * 10
  assert json.loads((workdir / "eval" / "follow_state.json").read_text())["done"] == {
      "2": ["mse"], "4": ["mse"]}
  assert json.loads((workdir / "eval" / "results_00000004.json").read_text())[
      "checkpoint_steps"] == [4]

  # A restarted follower continues: only the new step, then it stops at train.num_steps.
  shutil.rmtree(writing)
  trainer.steps = [6]
  config.eval.follow_timeout_s = 0.0  # waits for ever, but the final step ends it
  second = follow.follow(config, str(workdir), sleep=trainer.sleep, clock=trainer.clock)
  lock.release()
  assert sorted(second) == [6] and evaluated == [2, 4, 6]
  assert second[6]["results"]["mse/mse"] > 0
  assert _tensorboard_steps(workdir / "eval") == [2, 4, 6]  # one scalar per step, at its step
  names = [p.name for p in (workdir / "checkpoints").iterdir()]
  assert sorted(n for n in names if n.isdigit()) == ["4", "6"]  # retention, nothing moved aside
  assert not any("damaged" in n for n in names)


def test_follower_skips_a_checkpoint_deleted_while_being_read(tmp_path, monkeypatch, caplog):
  config = _config()
  workdir = tmp_path / "run"
  trainer = _Trainer(config, workdir, [], max_to_keep=5)
  for step in (2, 4, 6):
    trainer.save(step)
  evaluated = _evaluated_steps(monkeypatch)
  restore = checkpointing.restore

  def deleted_by_retention_while_reading(manager, target, cfg, step=None):
    if step == 4:  # listed, then deleted by the trainer as the follower starts reading it
      shutil.rmtree(workdir / "checkpoints" / "4")
    return restore(manager, target, cfg, step)

  monkeypatch.setattr(checkpointing, "restore", deleted_by_retention_while_reading)
  out = follow.follow(config, str(workdir), sleep=trainer.sleep, clock=trainer.clock)
  assert sorted(out) == evaluated == [2, 6]
  skipped = [r.getMessage() for r in caplog.records if "Skipped checkpoint" in r.getMessage()]
  assert skipped == ["Skipped checkpoint step 4: deleted while being read (the training run's "
                     "retention, checkpoint.max_to_keep)."]
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "6"]  # nothing moved
  state = json.loads((workdir / "eval" / "follow_state.json").read_text())
  assert sorted(state["done"]) == ["2", "6"] and list(state["skipped"]) == ["4"]


@pytest.mark.parametrize("field, value", [("checkpoint_step", 4), ("num_checkpoints", 2)])
def test_follow_refuses_fields_it_cannot_honour(tmp_path, field, value):
  config = _config()
  config.eval[field] = value
  with pytest.raises(ConfigError, match=f"config.eval.{field}={value}: follow mode"):
    driver.run_evaluation(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_sigterm_stops_a_waiting_follower(tmp_path, caplog):
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top

  def sleep(seconds):  # the scheduler stops the job while it waits for a first checkpoint
    os.kill(os.getpid(), signal.SIGTERM)

  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(follow.FollowInterrupted, match="run the same command to continue") as stop:
    follow.follow(_config(), str(tmp_path / "run"), sleep=sleep)
  assert stop.value.results == {} and stop.value.exit_code == 143  # not 0: the job must resume
  assert "SIGTERM received: stopping after the checkpoint being evaluated" in caplog.text
  assert not (tmp_path / "run").exists()  # nothing written while waiting
  assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored


def test_sigterm_after_a_checkpoint_keeps_its_results_and_asks_for_a_rerun(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  config = _config()
  workdir = tmp_path / "run"
  trainer = _Trainer(config, workdir, [2])

  def sleep(seconds):  # the first wait brings step 2; during the second, the job is preempted
    if trainer.steps:
      trainer.sleep(seconds)
    else:
      os.kill(os.getpid(), signal.SIGTERM)

  with pytest.raises(follow.FollowInterrupted, match="after 1 checkpoint") as stop:
    follow.follow(config, str(workdir), sleep=sleep, clock=trainer.clock)
  assert sorted(stop.value.results) == [2] and stop.value.exit_code == 143
  assert json.loads((workdir / "eval" / "follow_state.json").read_text())["done"] == {
      "2": ["mse"]}
