"""Stateless batch order, horizontal flips, eval batches, and the grain training iterator.

The global batch at step t is a pure function of (seed, t): epoch e = t // steps_per_epoch is
shuffled by a permutation drawn from `np.random.default_rng([seed, e])` and cut into global batches
(the last partial batch is dropped, as the reference's `drop_last=True`). Each host reads only its
contiguous share, so the hosts' shares concatenate to the single-host batch. Flips (training only,
`data.random_flip`) are drawn from `np.random.default_rng([seed, FLIP_STREAM, t])`, one uniform per
global batch position, so they too are independent of hosts and workers.

`train_iterator` runs this in grain: a `MapDataset` over step indices whose element t is this
host's batch t, prefetched by `data.worker_count` worker processes (or a thread of the main process
when 0 or when the source is in memory). Workers ship the batch in its stored form (uint8 for
decoded datasets) and the main process maps it to [-1, 1]. A resumed run starts the range at its
step; there is no iterator state to checkpoint.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from hebm_jax.data.datasets import DataOptions
from hebm_jax.data.sources import Source, in_memory, to_model_range
from hebm_jax.data.workers import prefetch_in_workers
from hebm_jax.errors import ConfigError

FLIP_STREAM = 0x666C6970  # 'flip': keeps flip draws apart from the permutation stream


def steps_per_epoch(num_examples: int, batch_size: int, field: str = "train.batch_size") -> int:
  """Full global batches per epoch (the last partial batch is dropped); raises if there are none.

  `field` names the config entry the batch size came from, for the error message.
  """
  steps = num_examples // batch_size
  if steps == 0:
    raise ConfigError(f"config.{field}={batch_size} is larger than the {num_examples} examples "
                     "of its split.")
  return steps


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def global_batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the global batch at `step`: (batch_size,) int64."""
  epoch, within = divmod(int(step), steps_per_epoch(num_examples, batch_size))
  perm = _epoch_permutation(int(num_examples), int(seed), epoch)
  return perm[within * batch_size:(within + 1) * batch_size].copy()


def flip_mask(batch_size: int, seed: int, step: int) -> np.ndarray:
  """(batch_size,) bool: which positions of the global batch at `step` are flipped."""
  return np.random.default_rng([seed, FLIP_STREAM, int(step)]).random(batch_size) < 0.5


def _host_slice(batch_size: int, process_index: int, process_count: int) -> slice:
  if batch_size % process_count:
    raise ConfigError(f"config.train.batch_size: {batch_size} does not split evenly over "
                      f"{process_count} hosts.")
  per_host = batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


def train_batch(source: Source, batch_size: int, seed: int, step: int, process_index: int = 0,
                process_count: int = 1, *, random_flip: bool = False) -> dict[str, np.ndarray]:
  """This host's share of the global training batch at `step`.

  Returns:
    {'image': (batch_size // process_count, H, W, C) float32 in [-1, 1], 'label': (...,) int32,
     and the source's extra fields}; images flipped left-right where `flip_mask` says so if
    `random_flip`.
  """
  batch = _stored_host_batch(source, batch_size, seed, step, process_index, process_count,
                             random_flip)
  batch["image"] = to_model_range(batch["image"])
  return batch


def _stored_host_batch(source: Source, batch_size: int, seed: int, step: int, process_index: int,
                       process_count: int, random_flip: bool) -> dict[str, np.ndarray]:
  """`train_batch` before the image is mapped to [-1, 1] (uint8 for decoded datasets): flipping
  commutes with that elementwise map, and a uint8 batch is a quarter of the bytes to ship."""
  share = _host_slice(batch_size, process_index, process_count)
  indices = global_batch_indices(len(source), batch_size, seed, step)
  batch = source.read(source.check_indices(indices[share]))
  if random_flip:
    flip = flip_mask(batch_size, seed, step)[share]
    batch["image"][flip] = batch["image"][flip, :, ::-1]
  return batch


def eval_batches(source: Source, batch_size: int, num_batches: int = 0, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Full batches of a split in order (num_batches=0: all full batches); this host's share of each."""
  share = _host_slice(batch_size, process_index, process_count)
  total = len(source) // batch_size
  if num_batches:
    total = min(total, num_batches)
  for b in range(total):
    yield source.get(np.arange(b * batch_size, (b + 1) * batch_size)[share])


class _HostBatchAt:
  """step -> this host's training batch (the picklable map function run by grain workers)."""

  def __init__(self, source: Source, batch_size: int, seed: int, process_index: int,
               process_count: int, random_flip: bool):
    self.source, self.batch_size, self.seed = source, batch_size, seed
    self.process_index, self.process_count = process_index, process_count
    self.random_flip = random_flip

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    return _stored_host_batch(self.source, self.batch_size, self.seed, int(step),
                              self.process_index, self.process_count, self.random_flip)


class TrainIterator(Iterator[dict]):
  """Host batches for steps start_step .. num_steps - 1. `close()` (or `with`) stops the workers;
  they also stop when the iterator is garbage-collected or exhausted."""

  def __init__(self, iterator, start_step: int, num_steps: int):
    self._it, self.step, self.num_steps = iterator, start_step, num_steps

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      raise StopIteration
    try:
      batch = next(self._it)
    except StopIteration:
      self.close()
      raise
    self.step += 1
    # Batches from workers arrive as views of shared memory that grain unlinks when they are
    # collected; hand out plain arrays so that batches kept by the caller hold no shared memory.
    batch = {k: v if type(v) is np.ndarray else np.array(v) for k, v in batch.items()
             if k != "image"} | {"image": to_model_range(batch["image"])}
    return batch

  def close(self) -> None:
    it, self._it = self._it, None
    if it is not None and hasattr(it, "close"):
      it.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    self.close()


def train_iterator(source: Source, data_config, batch_size: int, seed: int, start_step: int,
                   num_steps: int, process_index: int = 0, process_count: int = 1) -> TrainIterator:
  """A grain iterator over this host's batches for steps start_step .. num_steps - 1.

  Batch t equals `train_batch(source, batch_size, seed, t, process_index, process_count,
  random_flip=data.random_flip)` bit for bit, whatever `data.worker_count` and `data.prefetch`.
  With `data.worker_count` > 0, worker processes (spawned; each imports hebm_jax, so the first
  batch takes a few seconds) prepare steps round-robin, one whole batch each, `data.prefetch`
  batches ahead in all. With 0, one thread of the main process prepares `data.prefetch` batches
  ahead (0: none, each batch is made when asked for). Sources held in memory (`data.cache`,
  digits) are always served that way: indexing RAM costs less than shipping the batch from a
  worker (cached MNIST: 330k against 80k images/s), and their arrays are not copied into workers.
  Close the iterator (or use `with`) to stop the workers; garbage collection also does.
  """
  import grain  # pylint: disable=g-import-not-at-top

  d = DataOptions.from_config(data_config)
  _host_slice(batch_size, process_index, process_count)  # fail here rather than in a worker
  steps_per_epoch(len(source), batch_size)
  ds = grain.MapDataset.range(start_step, max(start_step, num_steps)).map(
      _HostBatchAt(source, batch_size, seed, process_index, process_count, d.random_flip))
  if d.worker_count and not in_memory(source):
    # Inside each worker batches are made one after the other; the workers' queues hold
    # `prefetch` batches in all.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    ds = prefetch_in_workers(ds, d.worker_count, max(1, -(-d.prefetch // d.worker_count)))
  else:
    # One thread overlaps batch preparation with the training step; more would only contend
    # for the GIL.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=min(d.prefetch, 1),
                                              prefetch_buffer_size=d.prefetch))
  return TrainIterator(iter(ds), start_step, num_steps)
