"""scripts/mnist_tables.sh, run with a stub `python` that only echoes its arguments."""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mnist_tables.sh"


def _run(tmp_path, out, stub_script='echo "stub $*"', **env):
  stub = tmp_path / "bin"
  stub.mkdir(exist_ok=True)
  python = stub / "python"
  python.write_text(f"#!/bin/sh\n{stub_script}\n")
  python.chmod(0o755)
  full_env = {**os.environ, "PATH": f"{stub}{os.pathsep}{os.environ['PATH']}", **env}
  return subprocess.run(["bash", str(SCRIPT), str(out)], env=full_env, capture_output=True,
                        text=True, check=False)


def test_a_rerun_appends_to_each_console_log(tmp_path):
  out = tmp_path / "out"
  env = {"DATA_DIR": "/data", "TABLES": "1", "SEEDS": "7", "PRIORS": "ebm",
         "EXTRA_FLAGS": "--config.prior.output_scale=4.0"}
  for _ in range(2):
    result = _run(tmp_path, out, **env)
    assert result.returncode == 0, result.stderr
  log = (out / "table1_ebm_s7.log").read_text()
  assert log.count("=== ") == 2 and log.count("stub main.py --config=configs/mnist.py") == 2
  assert f"--workdir={out}/table1_ebm_s7" in log
  assert "--config.seed=7" in log and "--config.data.data_dir=/data" in log
  assert log.rstrip().endswith("--config.prior.output_scale=4.0")
  evaluation = (out / "table1_ebm_s7.eval.log").read_text()
  stub_lines = [l for l in evaluation.splitlines() if l.startswith("stub main.py")]
  assert len(stub_lines) == 2 and all("--mode=eval" in l for l in stub_lines)
  # The summary module is called on the output directory.
  assert result.stdout.rstrip().endswith(f"stub -m hebm_jax.evaluation.seeds {out}")


def test_missing_data_dir_is_named(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
  result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "set DATA_DIR to a tfds data_dir holding a prepared mnist" in result.stderr


def test_missing_output_directory_is_named():
  result = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "DATA_DIR": "/d"},
                          capture_output=True, text=True, check=False)
  assert result.returncode != 0 and "usage: DATA_DIR=... bash scripts/mnist_tables.sh OUT" in result.stderr


def test_a_training_stopped_by_a_signal_stops_the_script_before_its_evaluation(tmp_path):
  # main.py exits 143 after SIGTERM (saved, not finished): the partly trained run must not be
  # evaluated or summarised as if it were done.
  out = tmp_path / "out"
  stub = 'echo "stub $*"; case "$*" in *--mode=eval*) ;; *main.py*) exit 143 ;; esac'
  result = _run(tmp_path, out, stub, DATA_DIR="/data", TABLES="1", PRIORS="ebm")
  assert result.returncode == 143, result.stdout + result.stderr
  assert "stopped (saved): run the same command again to continue" in result.stdout
  assert (out / "table1_ebm_s1234.log").exists()
  assert not (out / "table1_ebm_s1234.eval.log").exists()
  assert "hebm_jax.evaluation.seeds" not in result.stdout


def test_a_failed_training_is_reported_with_the_end_of_its_log(tmp_path):
  out = tmp_path / "out"
  stub = 'echo "stub $*"; echo "error: something broke"; exit 1'
  result = _run(tmp_path, out, stub, DATA_DIR="/data", TABLES="1", PRIORS="ebm")
  assert result.returncode != 0
  assert f"failed: see {out}/table1_ebm_s1234.log" in result.stdout
  assert "error: something broke" in result.stdout
  assert not (out / "table1_ebm_s1234.eval.log").exists()
