"""Progress reports of the training loop: clu.periodic_actions.ReportProgress without TensorFlow.

clu's `periodic_actions` imports its `metric_writers`, which import TensorFlow. This keeps what
the training loop used of it: every `every_secs` (and at the last step) the TensorBoard scalars
`steps_per_sec` and `uptime` (the tags clu wrote), and a debug log line with steps/s, percent
done, ETA and the share of time in `timed` parts.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

from absl import logging


def _format_secs(secs: float) -> str:
  """123456.7 -> '1d10h17m' (clu's format)."""
  days, secs = divmod(int(secs), 24 * 3600)
  hours, secs = divmod(secs, 3600)
  return (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + f"{secs // 60}m"


class ReportProgress:
  """Call with the step after each training step; reports when `every_secs` have passed since
  the last report, and at `num_train_steps`. The first call only starts the clock.

  Args:
    num_train_steps: the run's last step (for percent done and ETA).
    writer: a `summary_writer.MetricWriter` for the `steps_per_sec` and `uptime` scalars, or None.
    every_secs: seconds between reports.
  """

  def __init__(self, *, num_train_steps: int, writer=None, every_secs: float = 60.0):
    self._num_train_steps = num_train_steps
    self._writer = writer
    self._every_secs = every_secs
    self._previous: tuple[int, float] | None = None
    self._time_per_part: dict[str, float] = collections.defaultdict(float)
    self._t0 = time.monotonic()

  def __call__(self, step: int, t: float | None = None) -> bool:
    """Reports if due; returns whether it did."""
    t = time.monotonic() if t is None else t
    if self._previous is None:
      self._previous = (step, t)
      return False
    last_step, last_t = self._previous
    due = t - last_t > self._every_secs or step == self._num_train_steps
    if step == last_step or not due:
      return False
    steps_per_sec = (step - last_step) / max(t - last_t, 1e-9)
    message = (f"{steps_per_sec:.1f} steps/s, {100 * step / self._num_train_steps:.1f}% "
               f"({step}/{self._num_train_steps}), ETA: "
               f"{_format_secs((self._num_train_steps - step) / steps_per_sec)}")
    if self._time_per_part:
      total = time.monotonic() - self._t0
      message += " ({} : {})".format(_format_secs(total), ", ".join(
          f"{100 * dt / total:.1f}% {name}" for name, dt in sorted(self._time_per_part.items())))
    # Debug level: the console already gets the training loop's own line per log interval (clu's
    # note went to a log the console filter dropped).
    logging.debug("Progress: %s", message)
    if self._writer is not None:
      self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec,
                                        "uptime": time.monotonic() - self._t0})
    self._previous = (step, t)
    return True

  @contextlib.contextmanager
  def timed(self, name: str) -> Iterator[None]:
    """Adds the wall time of the block to part `name` (its blocks end with a device_get, so the
    device work they start is inside the measurement)."""
    start = time.monotonic()
    try:
      yield
    finally:
      self._time_per_part[name] += time.monotonic() - start
