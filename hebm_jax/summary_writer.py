"""TensorBoard event files without TensorFlow: clu's `MetricWriter` methods, `tensorboard` protos.

clu's `metric_writers` package imports TensorFlow on import (its `SummaryWriter` is built on
`tf.summary`), so its interface cannot be used on an install without TensorFlow. The writers here
have the same methods (`write_scalars`, `write_images`, `write_texts`, `write_histograms`,
`write_hparams`, `flush`, `close`) and write the same summaries as `tf.summary` does: the
`tensorboard` package's own summary protos (scalars, PNG images, text, histograms, hparams) as
records of an `events.out.tfevents.*` file, so `tensorboard --logdir` shows the same tags.

The event file is opened through `etils.epath` (as the workdir is), never through
`tensorboard.compat.tf`, which would import TensorFlow where it is installed.
"""

from __future__ import annotations

import abc
import concurrent.futures
import io
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar
from tensorboard.plugins.text import summary_v2 as text
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from hebm_jax.errors import LogDirError

_file_counter = iter(range(1 << 62))
_file_counter_lock = threading.Lock()


class MetricWriter(abc.ABC):
  """clu.metric_writers.MetricWriter's interface (the methods this project uses)."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """One scalar summary per tag (float, or a 0-d array)."""

  @abc.abstractmethod
  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """One image summary per tag: (N, H, W, C) or (H, W, C), C in {1, 3, 4}, floats in [0, 1]
    or uint8."""

  @abc.abstractmethod
  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """One text summary (markdown) per tag."""

  @abc.abstractmethod
  def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray],
                       num_buckets: Mapping[str, int] | None = None) -> None:
    """One histogram summary per tag, of all the array's values."""

  @abc.abstractmethod
  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The run's hyperparameters (flat mapping of bool, int, float or str) for the HParams tab."""

  @abc.abstractmethod
  def flush(self) -> None:
    """Everything written so far is on disk when this returns."""

  @abc.abstractmethod
  def close(self) -> None:
    """Flushes and releases the file; the writer is not used afterwards."""


def _to_uint8(images: np.ndarray) -> np.ndarray:
  """Floats in [0, 1] -> uint8 as `tf.image.convert_image_dtype(saturate=True)` does it."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.clip(np.floor(images.astype(np.float64) * 255.5), 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
  if image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def image_summary(tag: str, images: np.ndarray):
  """The summary `tf.summary.image(tag, images, max_outputs=N)` writes: a string tensor
  [width, height, png_1, ..., png_N] under the image plugin.

  Args:
    tag: the TensorBoard tag.
    images: (N, H, W, C) or (H, W, C), C in {1, 3, 4}; floats in [0, 1] or uint8.

  Returns:
    a `summary_pb2.Summary` with one value.
  """
  images = _to_uint8(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image summary {tag!r}: expected (N, H, W, C) with C in 1, 3, 4; got "
                     f"shape {images.shape}.")
  height, width = images.shape[1:3]
  blobs = [str(width).encode(), str(height).encode()] + [_png(im) for im in images]
  md = image_metadata.create_summary_metadata(display_name=None, description=None)
  md.data_class = summary_pb2.DATA_CLASS_BLOB_SEQUENCE
  tensor = tensor_util.make_tensor_proto(blobs, shape=[len(blobs)])
  return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=md, tensor=tensor)])


def _hparam_value(value: Any) -> bool | int | float | str:
  if isinstance(value, np.generic):
    value = value.item()
  return value if isinstance(value, (bool, int, float, str)) else str(value)


def _unwritable(logdir: str, error: OSError) -> LogDirError:
  return LogDirError(f"The TensorBoard directory {logdir} cannot be written: "
                     f"{error.strerror or error}.")


def _make_dir(logdir: str) -> None:
  path = epath.Path(logdir)
  if path.exists() and not path.is_dir():
    raise NotADirectoryError(f"{logdir} is a file")
  path.mkdir(parents=True, exist_ok=True)


def check_writable(logdir: str) -> None:
  """Creates `logdir` if needed and writes and removes a probe file in it; leaves it as it was.

  Raises:
    LogDirError: naming `logdir`, when it cannot be created or written.
  """
  probe = epath.Path(logdir) / f".tensorboard-write-probe-{os.getpid()}"
  try:
    _make_dir(logdir)
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise _unwritable(logdir, e) from e


class SummaryWriter(MetricWriter):
  """Writes one `events.out.tfevents.*` file in `logdir` (a local path or one etils.epath opens).

  Raises:
    LogDirError: naming `logdir`, when it cannot be created or written (raised here, so that a
      run fails before it starts rather than at its first log line).
  """

  def __init__(self, logdir: str):

    with _file_counter_lock:
      uid = next(_file_counter)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{uid}"
    self.path = os.path.join(logdir, name)
    try:
      _make_dir(logdir)
      self._file = epath.Path(self.path).open("wb")
    except OSError as e:
      raise _unwritable(logdir, e) from e
    self._records = record_writer.RecordWriter(self._file)
    self._lock = threading.Lock()
    self._write_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def _write_event(self, event) -> None:
    with self._lock:
      self._records.write(event.SerializeToString())

  def _write_summary(self, step: int, summary) -> None:
    self._write_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for tag, value in scalars.items():
      self._write_summary(step, scalar.scalar_pb(tag, np.asarray(value, np.float32)))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for tag, value in images.items():
      self._write_summary(step, image_summary(tag, np.asarray(value)))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for tag, value in texts.items():
      self._write_summary(step, text.text_pb(tag, value))

  def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray],
                       num_buckets: Mapping[str, int] | None = None) -> None:
    for tag, value in arrays.items():
      buckets = (num_buckets or {}).get(tag)
      self._write_summary(step, histogram.histogram_pb(tag, np.asarray(value, np.float64),
                                                       buckets=buckets))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    values = {k: _hparam_value(v) for k, v in hparams.items()}
    self._write_summary(0, hparams_summary.hparams_pb(values))

  def flush(self) -> None:
    with self._lock:
      self._file.flush()

  def close(self) -> None:
    with self._lock:
      self._file.close()


class AsyncWriter(MetricWriter):
  """Runs another writer's calls, in order, on one background thread (PNG encoding and file writes
  off the training loop). An error of a background write is raised by the next call."""

  def __init__(self, writer: MetricWriter):
    self._writer = writer
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="summary_writer")
    self._pending: list[concurrent.futures.Future] = []

  def _submit(self, fn, *args) -> None:
    self._raise_finished_errors()
    self._pending.append(self._executor.submit(fn, *args))

  def _raise_finished_errors(self, wait: bool = False) -> None:
    if wait:
      concurrent.futures.wait(self._pending)
    done = [f for f in self._pending if f.done()]
    self._pending = [f for f in self._pending if not f.done()]
    for f in done:
      f.result()  # re-raises the background error, if any

  def write_scalars(self, step, scalars):
    # Values may be device arrays: take them to the host now, not after the next step donates them.
    self._submit(self._writer.write_scalars, step, {k: np.asarray(v) for k, v in scalars.items()})

  def write_images(self, step, images):
    self._submit(self._writer.write_images, step, {k: np.asarray(v) for k, v in images.items()})

  def write_texts(self, step, texts):
    self._submit(self._writer.write_texts, step, dict(texts))

  def write_histograms(self, step, arrays, num_buckets=None):
    self._submit(self._writer.write_histograms, step,
                 {k: np.asarray(v) for k, v in arrays.items()}, num_buckets)

  def write_hparams(self, hparams):
    self._submit(self._writer.write_hparams, dict(hparams))

  def flush(self) -> None:
    self._submit(self._writer.flush)
    self._raise_finished_errors(wait=True)

  def close(self) -> None:
    try:
      self.flush()
    finally:
      self._executor.shutdown(wait=True)
      self._writer.close()


class NoOpWriter(MetricWriter):
  """The writer of processes other than 0: every method does nothing."""

  def write_scalars(self, step, scalars):
    pass

  def write_images(self, step, images):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass
