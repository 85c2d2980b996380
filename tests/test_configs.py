"""Every shipped experiment config: valid, buildable, one train step on mock data; `--mode=summary`."""

import importlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hebm_jax import input_pipeline, summary, train

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ("digits", "mnist", "mnist_012", "fashion_mnist", "mnist_anomaly", "svhn", "svhn_fid",
               "cifar10", "celeba64", "celeba128", "shapes3d")


def _config(name):
  return importlib.import_module(f"configs.{name}").get_config()


def test_every_config_file_is_listed():
  files = {p.stem for p in (REPO / "configs").glob("*.py")} - {"__init__", "default"}
  assert files == set(EXPERIMENTS)


@pytest.mark.parametrize("name", ["svhn", "svhn_fid"])
def test_parameter_counts_of_the_authors_models_are_exact(name):
  # Counted from the layer lists of train_hs.py / train_fid.py (REFERENCE 2.1, 2.2).
  expected = {"svhn": {"encoder": 752_160, "generator": 392_288, "prior": 8_551},
              "svhn_fid": {"encoder": 18_999_396, "generator": 55_348_608, "prior": 15_301}}[name]
  assert summary.model_summary(_config(name), num_devices=1)["params"] == expected


def test_fashion_mnist_model_has_the_papers_size():
  # Supp. Table 1: "3.2M params".
  total = summary.model_summary(_config("fashion_mnist"), num_devices=1)["total_params"]
  assert 3.1e6 < total < 3.3e6, total


def _tiny(config):
  """Same family, layers, image size and data; narrow networks and a batch of 4."""
  config.model.channels = tuple(min(c, 8) for c in config.model.channels)
  config.model.top_width = min(config.model.top_width, 16)
  config.prior.width = 8
  config.sampler.n_steps = 2
  config.train.batch_size = 4
  config.data.worker_count = 0
  return config


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_config_trains_one_step_on_mock_data(name):
  config = _tiny(_config(name))
  with tfds.testing.mock_data(num_examples=40):
    source = input_pipeline.load_split(config.data, config.data.train_split)
    input_pipeline.check_source(source, config.data)
    batch = input_pipeline.train_batch(source, 4, config.seed, 0, random_flip=config.data.random_flip)
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  assert batch["image"].shape == (4,) + image_shape
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  model = train.create_model(config, steps_per_epoch=3)
  state = train.create_train_state(model, jax.random.PRNGKey(0), image_shape)
  new_state, metrics = jax.jit(lambda s, b, k: train.train_step(model, s, b, k))(
      state, {"image": batch["image"]}, jax.random.PRNGKey(1))
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert int(new_state.step) == 1
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       new_state.params["generator"], state.params["generator"])
  assert max(jax.tree.leaves(moved)) > 0
  if config.model.batch_norm:  # running statistics moved away from their init
    stats = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                         new_state.batch_stats, state.batch_stats))
    assert stats and max(stats) > 0


@pytest.mark.slow
def test_tfds_dataset_trains_end_to_end_through_grain_workers(tmp_path):
  config = _tiny(_config("mnist"))
  config.data.worker_count = 2  # spawned grain workers decode the batches (streaming, no cache)
  config.data.cache = False
  config.train.num_steps = 4
  config.checkpoint.every_steps = 2
  config.logging.log_every_steps = 2
  config.logging.image_every_steps = 4
  config.logging.num_images = 4
  config.eval.every_steps = 4
  config.eval.batch_size = 4
  config.eval.num_batches = 2
  with tfds.testing.mock_data(num_examples=40):
    state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 4
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert (tmp_path / "images" / "hierarchical_00000004.png").exists()


@pytest.mark.slow
def test_summary_mode_writes_the_counts_and_trains_nothing(tmp_path):
  proc = subprocess.run(
      [sys.executable, "main.py", "--config=configs/svhn.py", f"--workdir={tmp_path}",
       "--mode=summary"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
  assert proc.returncode == 0, proc.stderr
  written = json.loads((tmp_path / "summary.json").read_text())
  assert written["params"] == {"encoder": 752_160, "generator": 392_288, "prior": 8_551}
  assert written["input_shape"] == [100, 32, 32, 3]
  assert written["latent_dims"] == [2, 2, 2, 10]
  assert "752,160" in proc.stdout and "head3/logvar/kernel" in proc.stdout
  assert sorted(os.listdir(tmp_path)) == ["summary.json"]  # no checkpoints, no event files


def test_summary_counts_batch_norm_statistics_apart_from_parameters():
  config = _config("shapes3d")
  with_bn = summary.model_summary(config, num_devices=1)
  config.model.batch_norm = False
  without = summary.model_summary(config, num_devices=1)
  assert with_bn["batch_stats"] > 0 and without["batch_stats"] == 0
  # pro-VLAE's batch norm learns a scale and an offset per feature: the parameters grow by exactly
  # as many values as the running statistics hold (a mean and a variance per feature).
  grown = with_bn["total_params"] - without["total_params"]
  assert grown == with_bn["batch_stats"]
