"""`--mode=eval --config.eval.follow=True`: evaluation as a job beside a live training run.

Waits for new checkpoints in the workdir and evaluates each one once, in step order, as
`--mode=eval` would: `<workdir>/eval/results_<step>.json`, and TensorBoard scalars and images at
that step under `<workdir>/eval/` (beside the training run's event files, so the curves line up).
The steps done are kept in `<workdir>/eval/follow_state.json`, so a restarted follower continues
where it stopped (a step counts as done for the metrics it was evaluated on).

It stops after the checkpoint of the final step (`config.train.num_steps`), on SIGTERM or SIGINT
(between checkpoints; at once while waiting; `FollowInterrupted`, exit status 143 or 130, as a
preempted training), or when no new checkpoint came for `config.eval.follow_timeout_s` seconds
(0: it waits for ever); it looks every `config.eval.follow_poll_s` seconds.

The workdir belongs to the trainer, and the follower only reads it (it writes only under
`<workdir>/eval/` and the compilation cache). A checkpoint being written is not listed: orbax
writes under a temporary name and renames it when complete (on object stores, the step counts
once its commit marker is there). A checkpoint that fails to read is skipped with one line, never
moved aside or deleted: usually the trainer's retention (`checkpoint.max_to_keep`) deleted it
while it was being read, which is said as such.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from etils import epath

from hebm_jax import checkpointing, fileio, preemption
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import checkpoints, session as session_lib

STATE_FILE = "follow_state.json"


class FollowInterrupted(preemption.Interrupted):
  """The follower stopped on a signal before the run's final step (exit status 143 or 130).

  Attributes:
    results: {step: results} of the checkpoints this call evaluated before it stopped.
  """

  def __init__(self, signum: int, workdir: str, results: dict[int, dict]):
    self.results = results
    super().__init__(signum, f"{signal.Signals(signum).name} received: stopped following "
                     f"{workdir} after {len(results)} checkpoint(s); run the same command to "
                     "continue.")


class _Stop(preemption.StopRequest):
  """SIGTERM/SIGINT: stop after the checkpoint being evaluated (at once while waiting)."""

  def request(self, signum: int = signal.SIGTERM) -> None:
    if self.signum is None:
      self.signum = signum
      logging.warning("%s received: stopping after the checkpoint being evaluated (finished "
                      "steps are kept; run the same command to continue).",
                      signal.Signals(signum).name)


def state_path(workdir: str) -> str:
  return os.path.join(workdir, "eval", STATE_FILE)


def load_state(workdir: str) -> dict:
  """{'done': {step: [metric names]}, 'skipped': {step: reason}} of earlier followers."""
  path = state_path(workdir)
  if not fileio.exists(path):
    return {"done": {}, "skipped": {}}
  state = json.loads(fileio.read_text(path))
  return {"done": {int(k): list(v) for k, v in state.get("done", {}).items()},
          "skipped": {int(k): str(v) for k, v in state.get("skipped", {}).items()}}


def _save_state(workdir: str, state: dict) -> None:
  if jax.process_index() == 0:
    fileio.write_text(state_path(workdir), json.dumps(
        {"done": {str(k): v for k, v in sorted(state["done"].items())},
         "skipped": {str(k): v for k, v in sorted(state["skipped"].items())}}, indent=1) + "\n")


def finished_steps(workdir: str, wanted: Callable[[int], bool] = lambda step: True) -> list[int]:
  """The `wanted` steps of complete checkpoints (temporary and uncommitted ones left out)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = epath.Path(checkpointing.checkpoint_dir(workdir))
  out = []
  for step in checkpoints.checkpoint_steps(workdir):
    try:
      if wanted(step) and ocp.utils.is_checkpoint_finalized(directory / str(step)):
        out.append(step)
    except (OSError, ValueError):  # deleted between listing and looking
      continue
  return out


def _check(config) -> None:
  ev = config.eval
  if ev.checkpoint_step:
    raise ConfigError(f"config.eval.checkpoint_step={ev.checkpoint_step}: follow mode evaluates "
                      "every checkpoint as it comes; leave it at 0.")
  if ev.num_checkpoints != 1:
    raise ConfigError(f"config.eval.num_checkpoints={ev.num_checkpoints}: follow mode evaluates "
                      "each checkpoint on its own; leave it at 1.")


def _agreed(value: int) -> int:
  """Process 0's `value` on every process (the steps must be the same everywhere)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def _all_read(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(np.asarray(multihost_utils.process_allgather(np.int32(ok)))))


def _step_dir(workdir: str, step: int) -> epath.Path:
  return epath.Path(checkpointing.checkpoint_dir(workdir)) / str(step)


def _read_once(session: session_lib.Session, workdir: str, step: int):
  manager = checkpoints.restore_config_checked(workdir, [step], session.config)
  try:
    return checkpointing.restore(manager, session.abstract, session.config, step)[0]
  finally:
    manager.close()


def _read(session: session_lib.Session, workdir: str, step: int, retry_s: float = 1.0):
  """(state, None) or (None, why it is skipped). Reads only: nothing is moved or deleted.

  A failed read is tried once more after `retry_s` (the trainer may have been deleting another
  step as the manager listed them); a step gone by then was deleted by the trainer's retention.

  Raises:
    IncompatibleCheckpointError, EvaluationError: the checkpoint is another model's or was
      trained on other data (a wrong config, not a passing problem).
  """
  for attempt in range(2):
    try:
      return _read_once(session, workdir, step), None
    except Exception as e:  # pylint: disable=broad-except
      if not _step_dir(workdir, step).exists():
        return None, ("deleted while being read (the training run's retention, "
                      "checkpoint.max_to_keep)")
      if attempt == 0:
        time.sleep(retry_s)
        continue
      if isinstance(e, checkpointing.DamagedCheckpointError):
        return None, f"damaged, left in place: {e}".splitlines()[0]
      if isinstance(e, (checkpointing.IncompatibleCheckpointError, checkpoints.EvaluationError)):
        raise
      return None, f"unreadable, left in place: {type(e).__name__}: {e}".splitlines()[0]
  raise AssertionError("unreachable")


def follow(config, workdir: str, sleep: Callable[[float], None] | None = None,
           clock: Callable[[], float] = time.monotonic) -> dict[int, dict]:
  """Evaluates each new checkpoint of a live run once; returns {step: results} of this call.

  Args:
    config: the experiment config (the training run's model and data; eval.* as wanted).
    workdir: the training run's work directory (it need not exist yet).
    sleep: waits between looks (default: `config.eval.follow_poll_s` seconds, cut short by
      SIGTERM/SIGINT); tests pass one that advances a fake run and clock.
    clock: seconds, for `config.eval.follow_timeout_s`.

  Raises:
    ConfigError, EvaluationError, checkpointing.IncompatibleCheckpointError: before any
      evaluation (the metrics, the data) or at the first checkpoint (another model or data).
    FollowInterrupted: stopped by SIGTERM/SIGINT before the final step (the steps done are
      kept, and the exception carries this call's results).
  """
  _check(config)
  metric_classes = session_lib.resolve_metrics(config)
  session = session_lib.Session(config, workdir, metric_classes)  # opens the data: fails early
  metrics = sorted(ev.name for ev in session.evaluators)
  poll_s = float(config.eval.get("follow_poll_s", 30.0))
  timeout_s = float(config.eval.get("follow_timeout_s", 0.0))
  final = config.train.num_steps
  state = load_state(workdir)

  def handled(step: int) -> bool:
    return step in state["skipped"] or set(metrics) <= set(state["done"].get(step, ()))

  def reached_final() -> bool:
    return any(s >= final and handled(s) for s in (*state["done"], *state["skipped"]))

  logging.info("Following %s: evaluating each new checkpoint (%s) until step %d%s.", workdir,
               ", ".join(metrics), final,
               f", or {timeout_s:g} s without one" if timeout_s else "")
  out: dict[int, dict] = {}
  last_new = clock()
  with _Stop() as stop:
    if sleep is None:
      def sleep(seconds: float) -> None:
        end = time.monotonic() + seconds
        while stop.signum is None and time.monotonic() < end:
          time.sleep(min(0.5, end - time.monotonic()))
    while True:
      if reached_final():
        logging.info("Followed %s to its final step %d.", workdir, final)
        break
      if stop.should_stop(0):
        break
      pending = (finished_steps(workdir, lambda s: not handled(s)) if session.is_main else [])
      step = _agreed(pending[0] if pending else -1)
      if step < 0:
        if timeout_s and clock() - last_new >= timeout_s:
          logging.warning("No new checkpoint in %s for config.eval.follow_timeout_s=%g s; "
                          "stopped following.", workdir, timeout_s)
          break
        sleep(poll_s)
        continue
      last_new = clock()
      restored, why = _read(session, workdir, step)
      if not _all_read(restored is not None):
        why = why or "unreadable on another process"
        logging.warning("Skipped checkpoint step %d: %s.", step, why)
        state["skipped"][step] = why
        _save_state(workdir, state)
        continue
      if session.writer is None:
        session.open_writer()  # after the first checkpoint's config check
      details, figures, timings = {}, [], {}
      per_step = {step: session.evaluate(restored, step, True, timings, details, figures)}
      out[step] = session.write_results([step], per_step, details, figures, timings)
      state["done"][step] = sorted(set(state["done"].get(step, ())) | set(metrics))
      _save_state(workdir, state)
  if stop.signum is not None and not reached_final():
    raise FollowInterrupted(stop.signum, workdir, out)
  return out
