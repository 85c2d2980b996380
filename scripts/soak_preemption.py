"""Preemption soak: a training run stopped by SIGTERM at random moments ends where an uninterrupted
run does, bit for bit.

    python scripts/soak_preemption.py --config=configs/mnist.py --workdir=/tmp/soak \
        --minutes=30 --steps=6000 -- --config.data.data_dir=../shared/tfds

Starts the uninterrupted run (`<workdir>/straight`) and the interrupted one (`<workdir>/soaked`)
side by side; the latter gets SIGTERM after a random 20-180 s (seed --seed), is restarted with the
same command, and so on until it finishes (stopping the signals after --minutes). Then both final
checkpoints are restored and compared array by array. Prints one line per interruption and a
summary; exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time


def _start(args, workdir, extra):
  cmd = [sys.executable, "main.py", f"--config={args.config}", f"--workdir={workdir}",
         f"--config.train.num_steps={args.steps}", *extra]
  log = open(os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + ".log"), "a")
  return subprocess.Popen(cmd, stdout=log, stderr=log)


def _final(config_path, workdir, steps, extra):
  """The final checkpoint's arrays as numpy, restored the way training does."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `configs`
  import jax  # pylint: disable=g-import-not-at-top
  from hebm_jax import checkpointing, summary  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("soak_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.train.num_steps = steps
  manager = checkpointing.make_manager(workdir, 1000, create=False)
  state, step = checkpointing.restore(manager, summary.abstract_state(config), config)
  manager.close()
  return step, jax.tree.leaves(state)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, required=True)
  parser.add_argument("--minutes", type=float, default=30.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("extra", nargs="*", help="after --: more main.py flags")
  args = parser.parse_args()
  rng = random.Random(args.seed)
  os.makedirs(args.workdir, exist_ok=True)
  straight_dir = os.path.join(args.workdir, "straight")
  soaked_dir = os.path.join(args.workdir, "soaked")
  start = time.time()
  straight = _start(args, straight_dir, args.extra)
  interruptions = 0
  while True:
    proc = _start(args, soaked_dir, args.extra)
    wait = rng.uniform(20, 180)
    try:
      code = proc.wait(timeout=wait if time.time() - start < 60 * args.minutes else None)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGTERM)
      code = proc.wait()
      print(f"{time.time() - start:7.0f} s: SIGTERM after {wait:.0f} s -> exit {code}", flush=True)
      if code == 128 + signal.SIGTERM:
        interruptions += 1
        continue
      if code != 0:  # 0: it finished just before the signal came
        print(f"FAIL: the interrupted run exited {code}, not {128 + signal.SIGTERM}", flush=True)
        return 1
    if code != 0:
      print(f"FAIL: the soaked run exited {code}", flush=True)
      return 1
    break
  if straight.wait() != 0:
    print("FAIL: the uninterrupted run failed", flush=True)
    return 1
  minutes = (time.time() - start) / 60
  step_a, a = _final(args.config, straight_dir, args.steps, args.extra)
  step_b, b = _final(args.config, soaked_dir, args.steps, args.extra)
  same = step_a == step_b and len(a) == len(b) and all(
      x.dtype == y.dtype and x.shape == y.shape and (x == y).all() for x, y in zip(a, b))
  print(f"{minutes:.1f} min, {interruptions} SIGTERMs; final steps {step_a} / {step_b}; "
        f"{len(a)} arrays {'bit-identical' if same else 'DIFFER'}", flush=True)
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
