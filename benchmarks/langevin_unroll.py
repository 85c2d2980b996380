"""The prior Langevin chain, and the train step around it, with the chain's loop unrolled.

    python -m benchmarks.langevin_unroll [--configs svhn,svhn_fid] [--unrolls 1,2,5,10,0]
                                         [--step_unrolls 1,5] [--repeats 20] [--json PATH]

`sampler.sample_prior(..., unroll=u)` runs the same chain with u Langevin steps per iteration of
the compiled loop (0 here means all K). A chain of K small MLP gradient steps is latency-bound:
on a GPU each step is a handful of tiny kernels plus the loop's trip-count check, so fewer
iterations may shorten it; on a CPU the loop costs little. For each config this prints:
  * the chain alone (batch of chains as `benchmarks.run` times it): compile s, ms, us per step,
    for each of --unrolls;
  * the jitted, state-donating train step with the chain unrolled, for each of --step_unrolls
    (the trainer's chain is rebound with `unrolled(u)` while the step is traced).
Timing as in `benchmarks.run`: a first call, two warm-up calls, the median of --repeats calls,
each synchronised before the clock is read.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from typing import Iterator

import jax

from benchmarks import run
from hebm_jax import sampler


@contextlib.contextmanager
def unrolled(unroll: int | bool) -> Iterator[None]:
  """Traces inside this context run `sampler.sample_prior` with `unroll` (True: all K steps)."""
  original = sampler.sample_prior
  sampler.sample_prior = functools.partial(original, unroll=unroll)
  try:
    yield
  finally:
    sampler.sample_prior = original


def _unroll_arg(u: int) -> int | bool:
  return True if u == 0 else u


def chain_rows(name: str, batch: int, unrolls: list[int], repeats: int) -> Iterator[dict]:
  """Config `name`'s K-step prior chain on `batch` chains, one row per unroll."""
  config, model, state, _ = run._model_and_state(name)  # pylint: disable=protected-access
  if model.prior is None:
    return
  z0 = jax.random.normal(jax.random.PRNGKey(3), (batch, model.latent_dim))
  key = jax.random.PRNGKey(2)
  args = (state.params["prior"], state.sn_state, z0, key)
  for u in unrolls:
    fn = jax.jit(lambda p, s, z, k, u=u: sampler.sample_prior(
        model.prior, p, s, z, k, model.n_steps, model.step_size, unroll=_unroll_arg(u))[0])
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile(run._compiler_options(config))  # pylint: disable=protected-access
    compile_s = time.perf_counter() - t0
    _, t = run.timed(lambda: jax.block_until_ready(compiled(*args)), repeats)
    yield {"config": name, "batch": batch, "part": "chain", "unroll": u or model.n_steps,
           "compile_s": compile_s, "ms": 1e3 * t, "us_per_step": 1e6 * t / model.n_steps}


def step_rows(name: str, batch: int, unrolls: list[int], repeats: int) -> Iterator[dict]:
  """Config `name`'s train step at `batch`, one row per unroll of its prior chain."""
  for u in unrolls:
    config, model, state, shape = run._model_and_state(name)  # pylint: disable=protected-access
    if model.prior is None:
      return
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + shape, minval=-1.0, maxval=1.0)
    with unrolled(_unroll_arg(u)):
      timing, _ = run.step_timing(model, state, x, jax.random.PRNGKey(2), repeats,
                                  compiler_options=run._compiler_options(config))  # pylint: disable=protected-access
    yield {"config": name, "batch": batch, "part": "train step", "unroll": u or model.n_steps,
           "compile_s": timing["step_compile_s"], "ms": timing["step_ms"]}


def _ints(text: str) -> list[int]:
  values = [int(v) for v in text.split(",") if v]
  if any(v < 0 for v in values):
    raise argparse.ArgumentTypeError(f"unroll counts must be >= 0 (0: all K steps); got {text!r}")
  return values


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="svhn,svhn_fid")
  parser.add_argument("--unrolls", type=_ints, default=[1, 2, 5, 10, 0],
                      help="steps per loop iteration for the chain alone; 0: all K")
  parser.add_argument("--step_unrolls", type=_ints, default=[1, 5],
                      help="the same for the whole train step; empty to skip")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--batch", type=int, default=0, help="0: as benchmarks.run chooses")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  names = [c for c in args.configs.split(",") if c]
  run.check_config_names(parser, names)
  results = {"environment": run.environment(), "rows": []}
  for name in names:
    batch = args.batch or run.default_batch(name)
    for rows in (chain_rows(name, batch, args.unrolls, args.repeats),
                 step_rows(name, batch, args.step_unrolls, args.repeats)):
      for row in rows:
        results["rows"].append(row)
        print(f"{name} {row['part']} unroll {row['unroll']}: {row['ms']:.2f} ms", flush=True)
        if args.json:
          run.write_json(args.json, results)
  run.print_rows("prior Langevin chain by loop unroll", results, [
      ("config", "config", "s"), ("batch", "batch", "d"), ("part", "part", "s"),
      ("unroll", "unroll", "d"), ("ms", "ms", ".2f"), ("us/Langevin step", "us_per_step", ".1f"),
      ("compile s", "compile_s", ".1f")])


if __name__ == "__main__":
  from hebm_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_hugepages()
  main()
