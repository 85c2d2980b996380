"""`config.eval.train_metrics`: the trainer's own evals run `--mode=eval` metrics, with the same
numbers, and bad lists are refused before anything is written."""

import importlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorboard.util import tensor_util

from hebm_jax import train
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import driver, in_training
from tests.conftest import tiny_digits_config
from tests.test_configs import EXPERIMENTS
from tests.test_eval_mode import _mock_config
from tests.test_summary_writer import _read


def _scalar(events, tag):
  return {step: float(tensor_util.make_ndarray(t)) for step, t in events[tag][1]}


def test_trainer_logs_the_anomaly_auprc_that_eval_mode_gives_for_the_checkpoint(tmp_path,
                                                                               monkeypatch):
  config = _mock_config("mnist_anomaly")
  config.train.update(batch_size=20, num_steps=4)
  config.checkpoint.every_steps = 2
  config.logging.update(log_every_steps=2, image_every_steps=4, num_images=4)
  config.eval.update(every_steps=2, num_batches=1, train_metrics=("anomaly",))
  config.eval.score.z = "sample"  # so that the numbers also depend on the evaluation's key
  workdir = str(tmp_path)
  # The console lines as the trainer formats them, whatever absl's verbosity in this process.
  lines = []
  monkeypatch.setattr(train.logging, "info", lambda msg, *args: lines.append(str(msg) % args if args else str(msg)))
  with tfds.testing.mock_data(num_examples=60):
    train.train_and_evaluate(config, workdir)
    config.eval.update(metrics=("anomaly",), checkpoint_step=2, num_checkpoints=1)
    at_2 = driver.run_evaluation(config, workdir)["results"]
    config.eval.checkpoint_step = 4
    at_4 = driver.run_evaluation(config, workdir)["results"]

  events = _read(tmp_path)
  for name in ("auprc", "auroc"):
    logged = _scalar(events, f"eval/anomaly/{name}")
    assert sorted(logged) == [2, 4]
    np.testing.assert_allclose(logged[2], at_2[f"anomaly/{name}"], rtol=1e-6)
    np.testing.assert_allclose(logged[4], at_4[f"anomaly/{name}"], rtol=1e-6)
  assert at_2["anomaly/auprc"] != at_4["anomaly/auprc"]  # the comparison can tell steps apart
  eval_lines = [line for line in lines if line.startswith("eval at step")]
  assert len(eval_lines) == 2 and all("| anomaly/auprc 0." in line for line in eval_lines)


@pytest.mark.parametrize("metrics, match", [
    (("anomally",), r"config\.eval\.train_metrics: unknown metric 'anomally'\. Did you mean "
                    r"'anomaly'\?"),
    (("anomaly",), r"config\.eval\.train_metrics: 'anomaly' needs a dataset with anomaly labels"),
    (("mse", "mse"), r"config\.eval\.train_metrics: 'mse' is listed twice"),
])
def test_bad_train_metrics_are_refused_before_the_workdir_is_touched(tmp_path, metrics, match):
  config = tiny_digits_config()
  config.eval.train_metrics = metrics
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_train_metrics_are_refused_in_a_multi_process_run_and_empty_is_fine():
  config = tiny_digits_config()
  assert in_training.check(config, process_count=2) == []  # none configured: nothing to refuse
  config.eval.train_metrics = ("mse",)
  assert [c.name for c in in_training.check(config)] == ["mse"]
  with pytest.raises(ConfigError, match=r"train_metrics: mse cannot run inside a training of 2 "
                                        r"processes; evaluate its checkpoints with "
                                        r"--config\.eval\.follow=True"):
    in_training.check(config, process_count=2)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_configs_train_metrics_fit_its_data(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  names = [c.name for c in in_training.check(config)]
  assert names == (["anomaly"] if name == "mnist_anomaly" else [])
