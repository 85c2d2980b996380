"""A background stage that places the next batches on the devices while the current step runs."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator

_DONE = object()


class DevicePrefetcher:
  """Iterates `place(batch)` for the batches of `host_batches`, `size` batches ahead, in a thread.

  The host pipeline's next batch is fetched and transferred (`place`, e.g. `train.shard_batch`)
  while the devices run the current step, so a step waits only when the host falls behind; that
  wait is measured (`last_wait_s`, `total_wait_s`). An exception in the producer is raised in the
  consumer at the batch where it happened.

  Args:
    host_batches: iterator of host batches (numpy pytrees).
    place: host batch -> device batch.
    size: device batches held ready (memory: `size` batches per device).
  """

  def __init__(self, host_batches: Iterator[Any], place: Callable[[Any], Any], size: int = 2):
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
    self._stop = threading.Event()
    self.last_wait_s = 0.0
    self.total_wait_s = 0.0
    self._thread = threading.Thread(target=self._produce, args=(host_batches, place), daemon=True,
                                    name="device-prefetch")
    self._thread.start()

  def _produce(self, host_batches, place):
    try:
      for batch in host_batches:
        item = place(batch)
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
      self._queue.put(_DONE)
    except BaseException as e:  # pylint: disable=broad-except
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self):
    start = time.perf_counter()
    item = self._queue.get()
    self.last_wait_s = time.perf_counter() - start
    self.total_wait_s += self.last_wait_s
    if item is _DONE:
      self._queue.put(_DONE)
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self) -> None:
    """Stops the producer thread (the host iterator is left to its owner to close)."""
    self._stop.set()
    while True:  # unblock a producer waiting on a full queue
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout=5.0)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
