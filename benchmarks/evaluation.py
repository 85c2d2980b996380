"""Throughput of the evaluation pipeline on the current device (random weights; no data, no TF).

    python -m benchmarks.evaluation [--repeats 5] [--json PATH] [--fid_batch 50]

Rows (median of --repeats timed calls after one warm-up call, each synchronised with
`block_until_ready`; compile time = the first call):
  * FID Inception pool3 features of 32x32x3 images (resized to 299 inside), images/s;
  * prior samples for FID (N(0, I), the config's K Langevin steps, decoded) for `mnist` and
    `svhn_fid`, images/s; with the Inception row this bounds the FID pipeline: 50,000 samples take
    50,000 / (1 / (1/sampling + 1/features)) seconds;
  * anomaly scores -log p(x, z) (`mnist`), images/s;
  * AIS log Z of the `mnist` prior (1,000 chains x 100 temperatures, one MALA step each), s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np


def _time(fn, repeats: int) -> tuple[float, float]:
  """(compile+first-call seconds, median seconds of `repeats` later calls)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times))


def _model_state(name: str):
  import importlib  # pylint: disable=g-import-not-at-top
  from hebm_jax import train  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}").get_config()
  model = train.create_model(config, steps_per_epoch=1)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  state = jax.jit(lambda k: train.create_train_state(model, k, shape))(jax.random.PRNGKey(0))
  return config, model, state, shape


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--fid_batch", type=int, default=50)
  parser.add_argument("--sample_batch", type=int, default=100)
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  from hebm_jax import prior_samples  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation import inception, likelihood, log_joint  # pylint: disable=g-import-not-at-top

  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; median of {args.repeats}")
  rows = []

  def report(what, batch, first, median, unit="images/s"):
    rate = batch / median if unit == "images/s" else median
    rows.append(dict(what=what, batch=batch, compile_and_first_s=round(first, 2),
                     median_s=round(median, 4), value=round(rate, 2), unit=unit))
    print(f"{what:<52} batch {batch:>5}  first {first:7.2f} s  median {median:8.4f} s  "
          f"{rate:10.2f} {unit}", flush=True)
    if args.json:   # after every row, so a run cut at its time limit keeps what it measured
      with open(args.json, "w") as f:
        json.dump(dict(device=str(device), platform=platform.platform(), rows=rows), f, indent=1)

  features = inception.feature_fn(inception.init_random(jax.random.PRNGKey(0)))
  x = jax.random.uniform(jax.random.PRNGKey(1), (args.fid_batch, 32, 32, 3), minval=-1, maxval=1)
  report("FID Inception features (32x32x3 -> 299)", args.fid_batch,
         *_time(lambda: features(x), args.repeats))

  for name in ("mnist", "svhn_fid"):
    config, model, state, _ = _model_state(name)
    b = args.sample_batch
    fn = lambda: next(prior_samples.prior_sample_batches(
        model, state, jax.random.PRNGKey(2), b, b, config.sampler.n_steps,
        config.sampler.step_size))[0]
    report(f"prior samples {name} (K={config.sampler.n_steps}, decoded)", b,
           *_time(fn, args.repeats))

  config, model, state, shape = _model_state("mnist")
  images = jax.random.uniform(jax.random.PRNGKey(3), (args.sample_batch,) + shape, minval=-1,
                              maxval=1)
  report("anomaly scores -log p(x, z), mnist", args.sample_batch,
         *_time(lambda: log_joint.anomaly_scores(model, state, images, jax.random.PRNGKey(4), 1),
                args.repeats))
  log_f, _, _ = likelihood.model_functions(model, state)
  ais = jax.jit(lambda k: likelihood.log_normalizer_ais(log_f, k, model.latent_dim, 1000, 100,
                                                        step_size=0.1)["log_z"])
  report("AIS log Z, mnist prior (1000 chains x 100 temps)", 1000,
         *_time(lambda: ais(jax.random.PRNGKey(5)), args.repeats), unit="s")


if __name__ == "__main__":
  main()
