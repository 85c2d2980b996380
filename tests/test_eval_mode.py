"""`--mode=eval` end to end: every metric on a tiny model and mock data, and every bad input."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hebm_jax import checkpointing, train
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import driver
from tests.conftest import tiny_digits_config
from tests.test_configs import EXPERIMENTS

REPO = pathlib.Path(__file__).resolve().parents[1]


def _save_checkpoints(config, workdir, steps):
  """Checkpoints of an untrained tiny model at `steps` (parameters differ per step)."""
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  manager = checkpointing.make_manager(str(workdir), 10)
  for step in steps:
    state = train.create_train_state(model, jax.random.PRNGKey(step), shape)
    checkpointing.save(manager, step, state.replace(step=step), config)
  manager.wait_until_finished()
  manager.close()


def _files(path):
  return sorted(str(p.relative_to(path)) for p in pathlib.Path(path).rglob("*"))


def _fast(config):
  config.eval.batch_size = 20
  config.eval.classifier.epochs = 2
  config.eval.classifier.batch_size = 50
  config.eval.attack.num_images = 2
  config.eval.attack.num_steps = 5
  config.eval.traversal.num_codes = 60
  config.eval.traversal.num_chains = 5
  config.eval.mig.num_samples = 50
  config.eval.long_run.n_steps = 20
  config.eval.long_run.record_every = 10
  config.eval.long_run.num_chains = 4
  config.eval.long_run.num_shown = 2
  config.eval.log_likelihood.update(ais_chains=20, ais_temperatures=10, is_samples=500,
                                    iw_samples=3, num_images=40)
  config.data.worker_count = 0
  return config


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("digits_run")
  config = _fast(tiny_digits_config())
  _save_checkpoints(config, workdir, (2, 4, 6))
  return config, workdir


def test_representation_metrics_end_to_end_on_digits(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("latent_classifier", "latent_attack", "traversals")
  out = driver.run_evaluation(config, str(workdir))
  assert out["checkpoint_steps"] == [6]
  names = list(out["results"])
  assert names[:3] == ["latent_classifier/z1", "latent_classifier/z2", "latent_classifier/z3"]
  assert all(0 <= out["results"][f"latent_classifier/z{l}"] <= 1 for l in (1, 2, 3))
  for l in (1, 2, 3):
    assert out["results"][f"latent_attack/z{l}_distortion"] > 0
  saved = json.load(open(workdir / "eval" / "results_00000006.json"))
  assert saved["results"] == pytest.approx(out["results"])
  assert saved["settings"]["latent_classifier"]["epochs"] == 2
  # z1 and z2 of the tiny model are 2-d: Fig. 7 for both; z3 (4-d) has none.
  pngs = sorted(p.name for p in (workdir / "eval").glob("*.png"))
  assert pngs == ["langevin_transition_z1_00000006.png", "langevin_transition_z2_00000006.png",
                  "latent_attack_00000006.png", "traversals_00000006.png"]
  assert list((workdir / "eval").glob("events.out.tfevents.*"))


def test_generation_metrics_end_to_end_on_digits(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("mse", "long_run", "log_likelihood")
  config.eval.checkpoint_step = 4
  out = driver.run_evaluation(config, str(workdir))
  r = out["results"]
  # An untrained prior is nearly flat: log Z close to 0, and AIS agrees with plain IS.
  assert abs(r["log_likelihood/log_z_ais"] - r["log_likelihood/log_z_is"]) < 0.05
  assert r["log_likelihood/nats"] < 0
  assert r["log_likelihood/bits_per_dim_discrete"] == pytest.approx(
      r["log_likelihood/bits_per_dim"] + 7, abs=1e-4)
  assert out["details"]["log_likelihood"]["num_images"] == 40
  assert r["mse/mse_01"] == pytest.approx(r["mse/mse"] / 4)
  assert 0 < r["mse/mse"] < 4
  assert 0 < r["long_run/mala_acceptance_K"] <= 1 and 0 < r["long_run/mala_acceptance_long"] <= 1
  assert list(out["details"]["long_run"]["steps"]) == [0, 10, 20]
  assert (workdir / "eval" / "long_run_energy_00000004.png").exists()
  assert (workdir / "eval" / "long_run_samples_00000004.png").exists()


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
  from hebm_jax.evaluation import inception  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("inception") / "random_inception.npz")
  inception.save_converted(inception.init_random(jax.random.PRNGKey(0)), path)
  return path


@pytest.mark.slow
def test_fid_kid_and_classifier_fd_end_to_end_with_random_weights(digits_run, random_inception,
                                                                   tmp_path):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("fid", "classifier_fd")
  config.eval.cache_dir = str(tmp_path / "cache")
  config.eval.batch_size = 4
  config.eval.fid.update(inception_weights=random_inception, num_samples=6, num_reference=8,
                         kid_subsets=2, kid_subset_size=4)
  config.eval.classifier_fd.update(num_samples=40, num_reference=40, num_train=200, epochs=1)
  out = driver.run_evaluation(config, str(workdir))
  r = out["results"]
  assert r["fid/fid"] > 0 and np.isfinite(r["fid/kid"]) and r["classifier_fd/fd"] > 0
  assert 0 <= r["classifier_fd/fd_real"] < r["classifier_fd/fd"]
  cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
  assert any(n.startswith("fid_digits_train_16x16x1_n8") and n.endswith(".npz") for n in cached)
  assert any(n.startswith("feature_classifier_digits") for n in cached)
  assert out["settings"]["fid"]["num_samples"] == 6
  # A second run reuses the cache and gives the same numbers.
  again = driver.run_evaluation(config, str(workdir))["results"]
  assert again == pytest.approx(r)
  # A cached file that was made for other data is refused before any work.
  stats = next((tmp_path / "cache").glob("fid_*.npz"))
  config.data.image_size = 16
  from hebm_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
  s = fid.load_statistics(stats, dataset="digits", split="train", image_shape=(16, 16, 1))
  fid.save_statistics(stats, s.mu, s.sigma, dataset="mnist", split="train", num_images=8,
                      image_shape=(16, 16, 1), implementation="x")
  with pytest.raises(driver.EvaluationError, match="do not fit.*dataset='mnist'"):
    driver.run_evaluation(config, str(workdir))


def test_fid_needs_its_weights_before_any_work(digits_run, tmp_path):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("fid",)
  with pytest.raises(ConfigError, match="pt_inception-2015-12-05-6726825d.pth"):
    driver.run_evaluation(config, str(workdir))
  config.eval.fid.inception_weights = str(tmp_path / "missing.npz")
  before = _files(workdir)
  with pytest.raises(FileNotFoundError, match="(?s)No FID Inception weights.*--convert"):
    driver.run_evaluation(config, str(workdir))
  config.eval.fid.inception_weights = str(tmp_path / "w.npz")
  config.eval.fid.num_samples = 0
  with pytest.raises(ConfigError, match="eval.fid.num_samples: must be a positive integer"):
    driver.run_evaluation(config, str(workdir))
  assert _files(workdir) == before


def test_several_checkpoints_give_mean_and_std_and_respect_checkpoint_step(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("latent_classifier",)
  config.eval.num_checkpoints = 2
  config.eval.checkpoint_step = 4
  out = driver.run_evaluation(config, str(workdir))
  assert out["checkpoint_steps"] == [2, 4]
  per = out["per_checkpoint"]
  for name, mean in out["results"].items():
    values = [per[2][name], per[4][name]]
    assert mean == pytest.approx(np.mean(values))
    assert out["std_over_checkpoints"][name] == pytest.approx(np.std(values))
  assert (workdir / "eval" / "results_00000004.json").exists()


def test_evaluation_is_reproducible(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("latent_attack",)
  a = driver.run_evaluation(config, str(workdir))["results"]
  b = driver.run_evaluation(config, str(workdir))["results"]
  assert a == b


def test_classifier_validation_split_and_prior_kl_end_to_end_on_digits(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("latent_classifier", "prior_kl")
  config.eval.checkpoint_step = 2  # a results file of its own
  config.eval.classifier.update(train_split="train[:1000]", validation_split="train[1000:]")
  config.eval.prior_kl.update(num_samples=256, inner_samples=4, method="is")
  out = driver.run_evaluation(config, str(workdir))
  results, details = out["results"], out["details"]["latent_classifier"]
  for l in (1, 2, 3):
    assert 0 <= results[f"latent_classifier/z{l}"] <= 1
    assert 0 <= results[f"latent_classifier_val/z{l}"] <= 1
    assert 1 <= details["selected_epoch"][f"z{l}"] <= 2
    assert results[f"prior_kl/z{l}"] > -1e-3
  assert details["num_train"] == 1000 and details["num_validation"] == 497
  assert 0 < results["prior_kl"] < 1  # the untrained EBM: a mild tilt of N(0, I)
  assert out["settings"]["latent_classifier"]["epoch_selection"] == "best validation accuracy"


def test_latent_classifier_on_posterior_samples_end_to_end_on_digits(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("latent_classifier",)
  config.eval.checkpoint_step = 2
  config.eval.classifier.input = "sample"
  out = driver.run_evaluation(config, str(workdir))
  assert out["settings"]["latent_classifier"]["input"] == "one posterior sample per image"
  config.eval.classifier.input = "mean"
  means = driver.run_evaluation(config, str(workdir))
  assert means["settings"]["latent_classifier"]["input"] == "posterior means"
  # The two-step model's posteriors are wide: its samples classify differently from its means.
  assert out["results"] != means["results"]


def _mock_config(name, **overrides):
  from configs import fashion_mnist, mnist_anomaly, shapes3d  # pylint: disable=g-import-not-at-top
  config = {"mnist_anomaly": mnist_anomaly, "fashion_mnist": fashion_mnist,
            "shapes3d": shapes3d}[name].get_config()
  config.model.channels = tuple(min(c, 8) for c in config.model.channels)
  config.prior.width = 8
  config.sampler.n_steps = 2
  config.data.cache = False
  for k, v in overrides.items():
    section, field = k.split(".")
    config[section][field] = v
  return _fast(config)


def test_anomaly_end_to_end_on_mock_mnist(tmp_path):
  config = _mock_config("mnist_anomaly")
  config.eval.metrics = ("anomaly",)
  config.eval.num_checkpoints = 2
  config.eval.score.update(variants_table=True, refine_steps=2)
  _save_checkpoints(config, tmp_path, (1, 2))
  with tfds.testing.mock_data(num_examples=60):
    out = driver.run_evaluation(config, str(tmp_path))
  assert out["checkpoint_steps"] == [1, 2]
  assert 0 < out["results"]["anomaly/auprc"] <= 1 and 0 <= out["results"]["anomaly/auroc"] <= 1
  # The table of score variants; its (w = gfactor, z = mean) entry is the shipped score.
  table = {k: v for k, v in out["results"].items() if k.startswith("anomaly_variants/")}
  assert len(table) == 18 and all(0 <= v <= 1 for v in table.values())
  assert table["anomaly_variants/w=gfactor,z=mean/auprc"] == out["results"]["anomaly/auprc"]
  assert out["paper"]["anomaly/auprc"]["value"] == 0.722  # digit 1, Table 3
  details = out["details"]["anomaly"]
  assert details["num_anomalous"] > 0 and details["num_normal"] > 0


def test_ood_end_to_end_on_mock_fashion_mnist_vs_mnist(tmp_path):
  config = _mock_config("fashion_mnist")
  config.eval.metrics = ("ood",)
  config.eval.ood.num_examples = 40
  _save_checkpoints(config, tmp_path, (3,))
  with tfds.testing.mock_data(num_examples=50):
    out = driver.run_evaluation(config, str(tmp_path))
  assert set(out["results"]) == {"ood/auprc", "ood/auroc"}
  assert out["details"]["ood"]["num_in"] == 40 and out["details"]["ood"]["num_out"] == 40
  assert out["paper"]["ood/auroc"]["value"] == 0.897


def test_mig_end_to_end_on_mock_shapes3d(tmp_path):
  config = _mock_config("shapes3d")
  config.eval.metrics = ("mig",)
  config.eval.mig.num_images = 40
  _save_checkpoints(config, tmp_path, (5,))
  with tfds.testing.mock_data(num_examples=40):
    out = driver.run_evaluation(config, str(tmp_path))
  assert 0 <= out["results"]["mig/mig"] <= 1
  mi = np.asarray(out["details"]["mig"]["normalised_mi"])
  assert mi.shape == (6, sum(config.model.z_dims))


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error, raised before any work, and the workdir left as it was.


@pytest.mark.parametrize("metrics, overrides, match", [
    (("latent_clasifier",), {}, "unknown metric 'latent_clasifier'. Did you mean 'latent_classifier'"),
    ((), {}, "no metric to evaluate"),
    (("anomaly",), {}, "needs a dataset with anomaly labels"),
    (("ood",), {}, "needs an out-of-distribution dataset"),
    (("ood",), {"eval.ood.dataset": "cifar10"}, "has 3 channel"),
    (("ood",), {"eval.ood.dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    (("mig",), {}, "needs ground-truth factor labels"),
    (("latent_classifier", "latent_classifier"), {},
     r"listed twice \(a repeated --config\.eval\.metrics flag adds to the list"),
    (("latent_attack",), {"eval.attack.num_steps": 0}, "eval.attack.num_steps"),
    (("latent_classifier",), {"eval.num_checkpoints": 0}, "eval.num_checkpoints"),
    (("long_run",), {"eval.long_run.record_every": 7}, "must divide eval.long_run.n_steps"),
    (("long_run",), {"prior.type": "gaussian"}, "the Gaussian prior has none"),
    (("latent_classifier",), {"eval.classifier.validation_split": "test[100:]"},
     "eval.classifier.validation_split: 'test\\[100:\\]' may share examples with the test split"),
    (("prior_kl",), {"eval.prior_kl.method": "mcmc"}, "eval.prior_kl.method: unknown method"),
    (("anomaly",), {"data.name": "mnist_anomaly", "data.image_size": 28, "eval.score.z": "max"},
     "eval.score.z: unknown z mode 'max'"),
])
def test_config_errors_name_the_problem_and_change_nothing(digits_run, metrics, overrides, match):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = metrics
  for k, v in overrides.items():
    *path, field = k.split(".")
    node = config
    for p in path:
      node = node[p]
    node[field] = v
  before = _files(workdir)
  with pytest.raises(ConfigError, match=match):
    driver.run_evaluation(config, str(workdir))
  assert _files(workdir) == before


def test_metric_names_accept_the_command_line_form():
  assert driver.metric_names("anomaly, ood") == ("anomaly", "ood")
  assert driver.metric_names(("anomaly,ood",)) == ("anomaly", "ood")
  assert driver.metric_names(("mig",)) == ("mig",)


def test_workdir_without_checkpoint_is_an_error_and_is_not_created(tmp_path):
  config = _fast(tiny_digits_config())
  config.eval.metrics = ("latent_classifier",)
  with pytest.raises(driver.EvaluationError, match="holds no checkpoint"):
    driver.run_evaluation(config, str(tmp_path / "never_trained"))
  assert not (tmp_path / "never_trained").exists()


def test_missing_checkpoint_step_lists_the_available_ones(digits_run):
  config, workdir = digits_run
  config = config.copy_and_resolve_references()
  config.eval.metrics = ("latent_classifier",)
  config.eval.checkpoint_step = 5
  before = _files(workdir)
  with pytest.raises(driver.EvaluationError, match=r"no such checkpoint.*steps \[2, 4, 6\]"):
    driver.run_evaluation(config, str(workdir))
  assert _files(workdir) == before


def test_checkpoint_of_other_data_or_model_is_refused(tmp_path):
  config = _mock_config("mnist_anomaly")
  _save_checkpoints(config, tmp_path, (1,))
  other = config.copy_and_resolve_references()
  other.eval.metrics = ("anomaly",)
  other.data.held_out_digit = 4
  before = _files(tmp_path)
  with pytest.raises(driver.EvaluationError, match="held_out_digit: checkpoint 1 vs config 4"):
    driver.run_evaluation(other, str(tmp_path))
  other.data.held_out_digit = 1
  other.model.z_dims = (2, 2, 3)
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="z_dims"):
    driver.run_evaluation(other, str(tmp_path))
  assert _files(tmp_path) == before


def test_meg_trained_checkpoint_can_be_scored_on_the_disjoint_test_set(tmp_path):
  # Both protocols train on the same images, so the protocol is an evaluation choice: the
  # disjoint test set shows how much of an AUPRC comes from test normals seen in training.
  config = _mock_config("mnist_anomaly", **{"data.anomaly_protocol": "meg"})
  config.eval.metrics = ("anomaly",)
  _save_checkpoints(config, tmp_path, (1,))
  outs = {}
  for protocol in ("meg", "disjoint"):
    config.data.anomaly_protocol = protocol
    with tfds.testing.mock_data(num_examples=60):
      outs[protocol] = driver.run_evaluation(config, str(tmp_path))
    assert outs[protocol]["settings"]["anomaly"]["protocol"] == protocol
  # Same anomalous images (every held-out digit), different normal test images.
  details = {p: o["details"]["anomaly"] for p, o in outs.items()}
  assert details["meg"]["num_anomalous"] == details["disjoint"]["num_anomalous"] > 0
  assert details["meg"]["mean_score_normal"] != details["disjoint"]["mean_score_normal"]


def test_missing_dataset_fails_before_any_metric_runs(tmp_path):
  config = _mock_config("mnist_anomaly")
  config.data.data_dir = str(tmp_path / "no_tfds_here")
  config.eval.metrics = ("anomaly",)
  _save_checkpoints(config, tmp_path / "run", (1,))
  before = _files(tmp_path / "run")
  with pytest.raises(FileNotFoundError, match="mnist"):
    driver.run_evaluation(config, str(tmp_path / "run"))
  assert _files(tmp_path / "run") == before


@pytest.mark.slow
def test_main_eval_mode_prints_one_line_errors(tmp_path):
  cmd = [sys.executable, "main.py", "--config=configs/digits.py", f"--workdir={tmp_path / 'w'}",
         "--mode=eval", "--config.eval.metrics=latent_classifier,anomaly"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "error: config.eval.metrics: 'anomaly' needs a dataset with anomaly labels" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_config_lists_metrics_that_fit_its_data(name):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}").get_config()
  config.eval.fid.inception_weights = "fid_inception.npz"  # a path; never opened by the checks
  names = [cls.name for cls in driver.resolve_metrics(config)]
  assert names and "mse" in names and "latent_attack" in names or name == "mnist_anomaly"
