"""grain worker processes, as the training iterator and the RAM cache start them."""

from __future__ import annotations

# Arrays under 1 MiB (a uint8 MNIST or SVHN batch) are cheaper to pickle through the queue than to
# pass in a new shared-memory block each.
MIN_SHM_BYTES = 1 << 20


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app, take their defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def prefetch_in_workers(ds, worker_count: int, per_worker_buffer_size: int):
  """`ds` (a grain IterDataset) run in `worker_count` worker processes, each holding up to
  `per_worker_buffer_size` elements ahead."""
  import grain  # pylint: disable=g-import-not-at-top
  _absl_flags_parsed()
  ds = grain.experimental.WithOptionsIterDataset(
      ds, grain.experimental.DatasetOptions(min_shm_size=MIN_SHM_BYTES))
  return ds.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=worker_count, per_worker_buffer_size=per_worker_buffer_size))
