"""Posterior codes of a whole split, in fixed-size jitted batches, with progress on the console."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hebm_jax.train_state import network_variables

Array = jax.Array


class Progress:
  """Logs 'what: done/total (pct), elapsed' at most every `every_s` seconds, and at the end."""

  def __init__(self, what: str, total: int, every_s: float = 10.0):
    self.what, self.total, self.every_s = what, total, every_s
    self.start = self.last = time.time()

  def update(self, done: int) -> None:
    now = time.time()
    if done >= self.total or now - self.last >= self.every_s:
      self.last = now
      logging.info("%s: %d/%d (%.0f%%), %.1f s", self.what, done, self.total,
                   100.0 * done / max(self.total, 1), now - self.start)


def padded_batches(source, batch_size: int, limit: int = 0) -> Iterator[tuple[dict, int]]:
  """Every example of `source` (the first `limit` if > 0) in batches of exactly `batch_size`.

  The last batch is padded by repeating its final example, so one compiled shape serves the whole
  split; yields (batch, number of real examples in it).
  """
  n = len(source) if not limit else min(limit, len(source))
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(n, start + batch_size))
    real = len(idx)
    batch = source.get(np.pad(idx, (0, batch_size - real), mode="edge"))
    yield batch, real


@dataclasses.dataclass
class Codes:
  """Posterior parameters of a split.

  Attributes:
    means, logvars: L arrays (N, d_l) each.
    labels: (N,) int (-1 where the dataset has no labels).
    extras: the batches' other per-example fields ('factors' (N, F), 'anomaly' (N,)).
  """
  means: list[np.ndarray]
  logvars: list[np.ndarray]
  labels: np.ndarray
  extras: dict[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.labels)


@functools.partial(jax.jit, static_argnums=0)
def _encode(encoder, variables, images):
  return encoder.apply(variables, images)


def map_split(fn: Callable[[dict], dict], source, batch_size: int, what: str,
              limit: int = 0) -> dict[str, np.ndarray]:
  """Applies `fn(batch) -> dict of (B, ...) arrays` over a split; concatenates the real rows."""
  total = len(source) if not limit else min(limit, len(source))
  progress = Progress(what, total)
  parts: dict[str, list] = {}
  done = 0
  for batch, real in padded_batches(source, batch_size, limit):
    out = jax.device_get(fn(batch))
    for k, v in out.items():
      parts.setdefault(k, []).append(np.asarray(v)[:real])
    done += real
    progress.update(done)
  return {k: np.concatenate(v) for k, v in parts.items()}


def encode_split(model, state, source, batch_size: int, what: str = "encoding",
                 limit: int = 0) -> Codes:
  """Posterior means and log-variances of every example of `source` (or its first `limit`).

  Args:
    model: `hebm_jax.train_state.HEBM`.
    state: `TrainState` (its encoder parameters and batch-norm statistics are used, eval mode).
    source: an `input_pipeline` source.
    batch_size: examples per jitted call.
    what: label of the progress lines.
    limit: only the first `limit` examples when > 0.
  """
  variables = network_variables(state, "encoder")
  num_layers = len(model.z_dims)

  def fn(batch):
    means, logvars = _encode(model.encoder, variables, jnp.asarray(batch["image"]))
    out = {f"mean{l}": means[l] for l in range(num_layers)}
    out.update({f"logvar{l}": logvars[l] for l in range(num_layers)})
    out.update({k: v for k, v in batch.items() if k != "image"})
    return out

  out = map_split(fn, source, batch_size, what, limit)
  extras = {k: v for k, v in out.items()
            if not k.startswith(("mean", "logvar")) and k != "label"}
  return Codes([out[f"mean{l}"] for l in range(num_layers)],
               [out[f"logvar{l}"] for l in range(num_layers)],
               out.get("label", np.full(len(out["mean0"]), -1, np.int32)), extras)
