"""`--mode=sample` and the ablation sweep command, end to end on a tiny config."""

import json
import os

import jax
import numpy as np
import pytest

from hebm_jax import checkpointing, generate, prior_samples, sweep, train
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation.driver import EvaluationError
from tests.conftest import tiny_digits_config


def _checkpointed(tmp_path, step=3):
  config = tiny_digits_config()
  config.data.worker_count = 0
  config.eval.batch_size = 20
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  manager = checkpointing.make_manager(str(tmp_path), 5)
  checkpointing.save(manager, step, train.create_train_state(model, jax.random.PRNGKey(0), shape)
                     .replace(step=step), config)
  manager.wait_until_finished()
  manager.close()
  return config


def test_sample_mode_writes_pngs_and_npz(tmp_path):
  config = _checkpointed(tmp_path)
  config.sample.num_samples = 30   # two batches of 20, the second cut to 10
  config.sample.num_reconstructions = 6
  config.sample.n_steps = 3
  out_dir = generate.write_samples(config, str(tmp_path))
  assert os.path.basename(out_dir) == "3_langevin_K3_s0.4_seed0"
  assert sorted(os.listdir(out_dir)) == ["hierarchical.png", "reconstructions.png", "samples.npz",
                                         "samples.png"]
  data = np.load(os.path.join(out_dir, "samples.npz"))
  assert data["images"].shape == (30, 16, 16, 1) and data["images"].dtype == np.uint8
  assert [data[f"z{l}"].shape for l in (1, 2, 3)] == [(30, 2), (30, 2), (30, 4)]
  assert data["originals"].shape == data["reconstructions"].shape == (6, 16, 16, 1)
  settings = json.loads(str(data["settings"]))
  assert settings["n_steps"] == 3 and settings["checkpoint_step"] == 3
  # Same settings, same samples; another seed, other samples.
  again = np.load(os.path.join(generate.write_samples(config, str(tmp_path)), "samples.npz"))
  np.testing.assert_array_equal(again["z1"], data["z1"])
  config.sample.seed = 1
  other = np.load(os.path.join(generate.write_samples(config, str(tmp_path)), "samples.npz"))
  assert not np.array_equal(other["z1"], data["z1"])


def test_sample_batches_match_the_training_sampler(tmp_path):
  config = _checkpointed(tmp_path)
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  state = train.create_train_state(model, jax.random.PRNGKey(0), shape)
  key = jax.random.PRNGKey(5)
  (images, zs, acc), = list(prior_samples.prior_sample_batches(model, state, key, 4, 4, 3, 0.4))
  k_init, k_chain = jax.random.split(jax.random.fold_in(key, 0))
  from hebm_jax import sampler  # pylint: disable=g-import-not-at-top
  z, _ = sampler.sample_prior(model.prior, state.params["prior"], state.sn_state,
                              jax.random.normal(k_init, (4, model.latent_dim)), k_chain, 3, 0.4)
  np.testing.assert_allclose(np.concatenate([np.asarray(z_) for z_ in zs], 1), z, rtol=1e-5, atol=1e-6)
  assert images.shape == (4, 16, 16, 1) and np.all(np.asarray(acc) == 1)


@pytest.mark.parametrize("field, value, match", [
    ("num_samples", 0, "config.sample.num_samples: must be a positive integer"),
    ("method", "hmc", "unknown method 'hmc'"),
    ("step_size", -1.0, "config.sample.step_size"),
])
def test_sample_mode_rejects_bad_settings_before_reading_anything(tmp_path, field, value, match):
  config = _checkpointed(tmp_path)
  config.sample[field] = value
  with pytest.raises(ConfigError, match=match):
    generate.write_samples(config, str(tmp_path))
  assert not (tmp_path / "samples").exists()


def test_sample_mode_needs_a_checkpoint(tmp_path):
  config = tiny_digits_config()
  with pytest.raises(EvaluationError, match="holds no checkpoint"):
    generate.write_samples(config, str(tmp_path / "empty"))
  config = _checkpointed(tmp_path)
  config.sample.checkpoint_step = 7
  with pytest.raises(EvaluationError, match=r"config.sample.checkpoint_step=7.*\[3\]"):
    generate.write_samples(config, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Sweeps.


def test_sweep_values_split_outside_brackets_and_parse_as_the_fields_type():
  assert sweep.split_values("15, 30,(2,2),[1, 2]") == ["15", "30", "(2,2)", "[1, 2]"]
  config = tiny_digits_config()
  axes = sweep.parse_sweeps(config, ["sampler.n_steps=15,30", "model.z_dims=(2,2,2),(1,1,8)",
                                     "optim.lr_prior=1e-5"])
  assert axes == [("sampler.n_steps", [15, 30]), ("model.z_dims", [(2, 2, 2), (1, 1, 8)]),
                  ("optim.lr_prior", [1e-5])]
  runs = sweep.grid(config, axes)
  assert [name for name, _ in runs][:2] == [
      "sampler.n_steps=15+model.z_dims=2,2,2+optim.lr_prior=1e-05",
      "sampler.n_steps=15+model.z_dims=1,1,8+optim.lr_prior=1e-05"]
  assert runs[3][1].sampler.n_steps == 30 and runs[3][1].model.z_dims == (1, 1, 8)
  assert config.sampler.n_steps == tiny_digits_config().sampler.n_steps  # the base is untouched


@pytest.mark.parametrize("spec, match", [
    ("sampler.nsteps=1,2", "no field 'sampler.nsteps'. Did you mean 'sampler.n_steps'"),
    ("sampler.n_steps=1.5", "is a float; the field holds a int"),
    ("prior.spectral_norm=1", "is a int; the field holds a bool"),
    ("sampler.n_steps", "expected field=v1,v2"),
    ("model.z_dims=3", "is a int; the field holds a tuple"),
])
def test_sweep_rejects_bad_flags(spec, match):
  with pytest.raises(sweep.SweepError, match=match):
    sweep.parse_sweeps(tiny_digits_config(), [spec])


def test_sweep_checks_every_run_before_training_any(tmp_path):
  config = tiny_digits_config()
  config.eval.metrics = ("mse",)
  with pytest.raises(sweep.SweepError, match=r"run sampler.n_steps=0: config.sampler.n_steps"):
    sweep.run_sweep(config, str(tmp_path), ["sampler.n_steps=2,0"])
  assert not any(tmp_path.iterdir())


def _two_step_config():
  """Two-step tiny runs, each evaluated on 'mse' once at the end."""
  config = tiny_digits_config()
  config.data.worker_count = 0
  config.train.num_steps = 2
  config.checkpoint.every_steps = 2
  config.logging.image_every_steps = 2
  config.eval.every_steps = 2
  config.eval.metrics = ("mse",)
  return config


@pytest.mark.slow
def test_sweep_trains_and_evaluates_each_run(tmp_path):
  config = _two_step_config()
  rows = sweep.run_sweep(config, str(tmp_path), ["sampler.n_steps=2,3"])
  assert [r["run"] for r in rows] == ["sampler.n_steps=2", "sampler.n_steps=3"]
  assert all(r["checkpoint_steps"] == [2] for r in rows)
  assert all(0 < r["results"]["mse/mse"] < 4 for r in rows)
  saved = json.load(open(tmp_path / "sweep_results.json"))
  assert saved["axes"] == {"sampler.n_steps": [2, 3]}
  assert (tmp_path / "sampler.n_steps=3" / "eval" / "results_00000002.json").exists()


@pytest.mark.slow
def test_sweep_marks_a_diverged_run_and_goes_on(tmp_path):
  config = _two_step_config()
  config.logging.log_every_steps = 1
  # |f| of any prior exceeds 1e-12: the first run's guard stops it; the second has no guard.
  rows = sweep.run_sweep(config, str(tmp_path), ["train.max_abs_energy=1e-12,0.0"])
  assert [r["status"].split(":")[0] for r in rows] == ["diverged", "ok"]
  assert rows[0]["results"] == {} and "max_abs_energy" in rows[0]["status"]
  assert 0 < rows[1]["results"]["mse/mse"] < 4
  table = sweep.format_table(rows, ["train.max_abs_energy"])
  assert "status" in table.splitlines()[0] and "diverged" in table.splitlines()[2]
  saved = json.load(open(tmp_path / "sweep_results.json"))
  assert saved["runs"][0]["status"].startswith("diverged")
