"""Command-line errors: one `error:` line, exit status 2, nothing created."""

import pathlib
import subprocess
import sys

import pytest
from absl import flags

from hebm_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_unknown_config_field_names_the_override_and_the_closest_field():
  error = AttributeError("'\\'num_stepz\\'\\nDid you mean \"num_steps\" instead of \"num_stepz\"?'")
  message = cli.flag_error_message(error, ["main.py", "--config=configs/digits.py",
                                           "--config.train.num_stepz=5"])
  assert message == ("--config.train.num_stepz: the config has no field 'num_stepz'; did you "
                     "mean 'num_steps'?")
  section = AttributeError("'\\'trian\\'\\nDid you mean \"train\" instead of \"trian\"?'")
  assert cli.flag_error_message(section, ["m", "--config.trian.num_steps=5"]).startswith(
      "--config.trian.num_steps: the config has no field 'trian'; did you mean 'train'")


def test_config_file_errors_name_the_file():
  missing = OSError("Failed loading config file")
  missing.__cause__ = FileNotFoundError(2, "No such file or directory")
  assert cli.flag_error_message(missing, ["m", "--config=configs/nope.py"]) == (
      "--config=configs/nope.py: no such config file.")
  broken = SyntaxError("invalid syntax", ("x.py", 3, 1, "def f(:"))
  assert cli.flag_error_message(broken, ["m", "--config=x.py"]) == (
      "--config=x.py: the config file does not parse: invalid syntax (line 3).")


def test_flag_value_errors_are_shortened():
  error = flags.IllegalFlagValueError("flag --mode=evl: value should be one of <train|eval>")
  assert cli.flag_error_message(error, []) == "--mode=evl: value should be one of <train|eval>"


@pytest.mark.parametrize("args, message", [
    (["--config.train.num_stepz=5"], "error: --config.train.num_stepz: the config has no field "
                                     "'num_stepz'; did you mean 'num_steps'?"),
    (["--mode=evl"], "error: --mode=evl: value should be one of"),
    (["--config.train.num_steps=0"], "error: config.train.num_steps: must be a positive integer"),
])
def test_main_reports_one_line_and_creates_nothing(tmp_path, args, message):
  workdir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "main.py", "--config=configs/digits.py",
                         f"--workdir={workdir}", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr and "Traceback" not in proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("signum, code", [(15, 143), (2, 130)])
def test_a_training_stopped_by_a_signal_exits_128_plus_the_signal(signum, code, capsys):
  # main.py and the sweep both end through this: a preempted run must not look finished (0).
  from hebm_jax import preemption  # pylint: disable=g-import-not-at-top

  def stopped():
    raise preemption.TrainingInterrupted(signum, 7)

  with pytest.raises(SystemExit) as exit_info:
    cli.run_reporting_user_errors(stopped, (ValueError,))
  assert exit_info.value.code == code
  assert "error:" not in capsys.readouterr().err


def test_divergence_is_one_error_line_and_exit_status_1(capsys):
  from hebm_jax import divergence  # pylint: disable=g-import-not-at-top

  def diverged():
    raise divergence.DivergenceError("non-finite loss at steps 40-50", 41)

  with pytest.raises(SystemExit) as exit_info:
    cli.run_reporting_user_errors(diverged, (ValueError,))
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == "error: non-finite loss at steps 40-50\n"
