"""One process of a 2-process x 2-CPU-device job (run by test_multiprocess.py, not collected).

argv: process_id port workdir num_steps out.npz
"""

import os
import sys

os.environ["JAX_NUM_CPU_DEVICES"] = "2"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
  pid, port, workdir, num_steps, out = sys.argv[1:6]
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=int(pid))
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from hebm_jax import train  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_digits_config  # pylint: disable=g-import-not-at-top

  config = tiny_digits_config()
  config.train.num_steps = int(num_steps)
  config.train.compilation_cache = "workdir"   # the default: process 0 writes, both read
  state = train.train_and_evaluate(config, workdir)
  local = lambda x: np.asarray(x.addressable_data(0))
  flat = {jax.tree_util.keystr(k): local(v)
          for k, v in jax.tree_util.tree_leaves_with_path(state.params)}
  np.savez(out, step=local(state.step), **flat)


if __name__ == "__main__":
  main()
