"""Multi-host training, simulated by two processes with two CPU devices each (gloo collectives)."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from hebm_jax import train
from tests.conftest import tiny_digits_config

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, num_steps, out_dir):
  port = _free_port()
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  procs = [subprocess.Popen([sys.executable, str(WORKER), str(pid), str(port), str(workdir),
                             str(num_steps), str(out_dir / f"p{pid}.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
           for pid in (0, 1)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return [dict(np.load(out_dir / f"p{pid}.npz")) for pid in (0, 1)]


@pytest.mark.slow
def test_two_hosts_match_one_host_and_resume(tmp_path):
  workdir = tmp_path / "multi"
  _run_two_processes(workdir, 3, tmp_path)
  p0, p1 = _run_two_processes(workdir, 6, tmp_path)  # resumes from step 3
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  assert int(p0["step"]) == int(p1["step"]) == 6
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k])  # the hosts hold the same replicated state

  # One process with the same four devices and global batch.
  state = jax.device_get(train.train_and_evaluate(tiny_digits_config(), str(tmp_path / "single")))
  single = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(state.params)}
  assert set(single) == set(p0) - {"step"}
  moved = 0.0
  diff = 0.0
  fresh = jax.device_get(train.create_train_state(
      train.create_model(tiny_digits_config(), 74), jax.random.fold_in(jax.random.PRNGKey(0), 0),
      (16, 16, 1)).params)
  fresh = {jax.tree_util.keystr(k): np.asarray(v)
           for k, v in jax.tree_util.tree_leaves_with_path(fresh)}
  for k in single:
    diff += float(np.sum((single[k] - p0[k]) ** 2))
    moved += float(np.sum((single[k] - fresh[k]) ** 2))
  assert moved > 1e-4
  assert np.sqrt(diff) < 1e-3 * np.sqrt(moved)
