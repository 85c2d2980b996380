"""Stopping a training run cleanly on SIGTERM (schedulers, preemption) and SIGINT (Ctrl-C).

`StopRequest` turns the first SIGTERM or SIGINT into a request that the training loop sees after
the step it is running: it saves a checkpoint at that step and stops (`TrainingInterrupted`). A
second SIGINT stops at once (Python's KeyboardInterrupt). In a multi-process job the request must
be seen by every process at the same step, or the processes would wait on each other's
collectives forever; so processes exchange their flags (an all-gather) every `sync_every` steps,
at the same steps everywhere, and stop together at the first exchange after a signal.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
from absl import logging

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """A job stopped early on a signal, with what it finished saved; the same command continues it.

  Attributes:
    signum: the signal (signal.SIGTERM or signal.SIGINT).
    exit_code: what a command-line program should exit with: 128 + the signal, the shell's
      convention (143 after SIGTERM, 130 after Ctrl-C). Not 0: the job is not finished, and a
      Kubernetes Job, a `set -e` script or a retrying launcher must see that to resume it rather
      than count it done.
  """

  def __init__(self, signum: int, message: str):
    self.signum = signum
    self.exit_code = 128 + int(signum)
    super().__init__(message)


class TrainingInterrupted(Interrupted):
  """Training stopped on a signal after saving a checkpoint at `step` (attribute `step`)."""

  def __init__(self, signum: int, step: int):
    self.step = step
    super().__init__(signum, f"{signal.Signals(signum).name} received: saved a checkpoint at "
                     f"step {step} and stopped; run the same command to resume.")


class StopRequest:
  """Signal handlers for the duration of a `with` block (only in the main thread; elsewhere,
  e.g. in a notebook's worker thread, signals keep their handlers and only `request` works).

  Args:
    sync_every: steps between the multi-process flag exchanges (ignored with one process).
  """

  def __init__(self, sync_every: int = 1):
    self.signum: int | None = None
    self.sync_every = max(1, int(sync_every))
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum: int, frame) -> None:  # pylint: disable=unused-argument
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.request(signum)

  def request(self, signum: int = signal.SIGTERM) -> None:
    """Asks the loop to save and stop after its current step (what the handlers call)."""
    if self.signum is None:
      self.signum = signum
      logging.warning("%s received: finishing the current step, then saving a checkpoint and "
                      "stopping%s.", signal.Signals(signum).name,
                      " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after `step`; the same answer in every process."""
    if jax.process_count() == 1:
      return self.signum is not None
    if step % self.sync_every:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
    signals = [int(s) for s in np.asarray(flags).reshape(-1) if s]
    if signals and self.signum is None:
      self.signum = signals[0]  # another process was signalled: stop with it
    return bool(signals)
