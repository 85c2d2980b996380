"""Images/s delivered by `input_pipeline.train_iterator` at batch 100, decoding included.

    python -m benchmarks.input_pipeline [--seconds 3] [--json PATH] [--tfds_dir ../shared/tfds]

Rows, each for data.worker_count 0 and 2 and data.cache off and on:
  * mnist 28x28x1: the real tfds MNIST (array_record) in --tfds_dir; skipped if absent.
  * synthetic 32x32x3: 10,000 uniform-noise RGB images written as a tfds 'svhn_cropped'
    array_record dataset in a temporary folder (PNG, as tfds stores SVHN/CIFAR-10), so the
    timing includes the same record reading, proto parsing and PNG decoding as real data (noise
    compresses worse than photos, so this is if anything pessimistic).
  * digits 16x16x1: the in-memory scikit-learn digits (no decoding), for reference.
Rows that need tensorflow_datasets are skipped with a note where it is not installed.
Measured: time to the first batch (worker start-up), then batches for --seconds: images/s (wall
clock) and CPU us/image (this process and its grain workers together, from /proc), which does not
depend on what else the machine runs: 1e6 * cores / (CPU us/image) bounds the rate on idle cores.
With cache on, 'load s' includes decoding the whole split into RAM, and batches are served from the
main process whatever worker_count says.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import ml_collections
import numpy as np

from hebm_jax import input_pipeline

BATCH = 100
SYNTH_EXAMPLES = 10_000


def data_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      name="mnist", data_dir="", train_split="train", eval_split="test", image_size=28,
      channels=1, image_key="image", label_key="label", classes=(), held_out_digit=1,
      random_flip=False, worker_count=0, prefetch=2, cache=False))
  config.update(overrides)
  return config


def _cpu_seconds() -> float:
  """CPU time of this process and its live child processes (grain workers; Linux /proc)."""
  total = time.process_time()
  tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
  for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == os.getpid():  # ppid
      total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
  return total


def measure(config, seconds: float) -> dict:
  t0 = time.perf_counter()
  source = input_pipeline.load_split(config, config.train_split)
  load_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  with input_pipeline.train_iterator(source, config, BATCH, seed=0, start_step=0,
                                     num_steps=10**9) as it:
    batch = next(it)
    first_s = time.perf_counter() - t0
    assert batch["image"].shape[0] == BATCH and batch["image"].dtype == np.float32
    images, t0, cpu0 = 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - t0 < seconds:
      images += len(next(it)["image"])
    rate = images / (time.perf_counter() - t0)
    cpu_us = (_cpu_seconds() - cpu0) / images * 1e6
  return dict(load_s=round(load_s, 2), first_batch_s=round(first_s, 2),
              images_per_s=round(rate), cpu_us_per_image=round(cpu_us, 1))


def main(argv=None) -> None:
  repo = pathlib.Path(__file__).resolve().parents[1]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
  parser.add_argument("--json", default="", help="also write the rows to this JSON file")
  parser.add_argument("--tfds_dir", default=str(repo.parent / "shared" / "tfds"),
                      help="data_dir holding a prepared tfds 'mnist'")
  args = parser.parse_args(argv)

  cases, notes = [], []
  try:
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
    have_tfds = True
  except ImportError:
    have_tfds = False
    notes.append("tensorflow_datasets is not installed: mnist and synthetic 32x32x3 rows skipped.")
  tmp = tempfile.TemporaryDirectory()
  if have_tfds:
    if (pathlib.Path(args.tfds_dir) / "mnist").is_dir():
      cases.append(("mnist 28x28x1 (real, PNG)", dict(name="mnist", data_dir=args.tfds_dir)))
    else:
      notes.append(f"no prepared mnist in {args.tfds_dir}: mnist rows skipped.")
    from hebm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    synthetic.write_tfds_dataset("svhn_cropped", tmp.name, {"train": {
        "image": rng.integers(0, 256, (SYNTH_EXAMPLES, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 10, SYNTH_EXAMPLES)}})
    cases.append(("synthetic 32x32x3 (PNG)", dict(name="svhn_cropped", data_dir=tmp.name,
                                                  image_size=32, channels=3)))
  cases.append(("digits 16x16x1 (in memory)", dict(name="digits", image_size=16)))

  print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; batch {BATCH}; "
        f"{args.seconds:g} s per row")
  for note in notes:
    print("NOTE:", note)
  header = (f"{'dataset':<28} {'workers':>7} {'cache':>5} {'load s':>7} {'1st batch s':>11} "
            f"{'images/s':>9} {'CPU us/image':>12}")
  print(header)
  print("-" * len(header))
  rows = []
  for label, overrides in cases:
    for cache in (False, True):
      for workers in (0, 2):
        config = data_config(**overrides, worker_count=workers, cache=cache)
        row = dict(dataset=label, worker_count=workers, cache=cache,
                   **measure(config, args.seconds))
        rows.append(row)
        print(f"{label:<28} {workers:>7} {'on' if cache else 'off':>5} {row['load_s']:>7.2f} "
              f"{row['first_batch_s']:>11.2f} {row['images_per_s']:>9,} "
              f"{row['cpu_us_per_image']:>12.1f}", flush=True)
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(batch_size=BATCH, seconds_per_row=args.seconds, notes=notes, rows=rows,
                     cpu_count=os.cpu_count()), f, indent=1)
  tmp.cleanup()


if __name__ == "__main__":
  main()
