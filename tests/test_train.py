"""Training-loop behaviour: learning, device-count invariance, exact resumption, bad inputs."""

import hashlib
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import checkpointing, input_pipeline, train
from tests.conftest import tiny_digits_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _model_and_state(config, seed=0):
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return model, train.create_train_state(model, jax.random.PRNGKey(seed), shape)


def _global_norm_diff(a, b):
  return float(np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))))


def _max_abs_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))


def test_a_few_dozen_steps_lower_the_reconstruction_loss(tiny_config):
  tiny_config.model.channels = (16, 32, 64)
  model, state = _model_and_state(tiny_config)
  source = input_pipeline.load_split(tiny_config.data, "train")
  step = jax.jit(lambda s, b, k: train.train_step(model, s, b, k))
  key = jax.random.PRNGKey(1)
  rec = []
  for t in range(40):
    batch = input_pipeline.train_batch(source, 50, 0, t)
    state, metrics = step(state, {"image": batch["image"]}, key)
    rec.append(float(metrics["rec_loss"]))
  assert np.all(np.isfinite(rec))
  assert np.mean(rec[-5:]) < 0.6 * np.mean(rec[:5]), rec
  assert int(state.step) == 40


def test_one_and_four_devices_give_the_same_parameters(tiny_config):
  assert jax.device_count() >= 4
  model, state = _model_and_state(tiny_config)
  source = input_pipeline.load_split(tiny_config.data, "train")
  key = jax.random.PRNGKey(3)
  results = {}
  for n in (1, 4):
    devices = jax.devices()[:n]
    step = jax.pmap(lambda s, b, k: train.train_step(model, s, b, k, axis_name=train.AXIS),
                    axis_name=train.AXIS, in_axes=(None, 0, None), out_axes=None, devices=devices)
    s, first_metrics = state, None
    for t in range(3):
      batch = input_pipeline.train_batch(source, 16, 0, t)
      s, metrics = step(s, train.shard_batch({"image": batch["image"]}, devices), key)
      first_metrics = first_metrics or metrics
    results[n] = (jax.device_get(s), jax.device_get(first_metrics))
  (s1, m1), (s4, m4) = results[1], results[4]
  # Reduction order differs between 1 and 4 devices; Adam with b1 = 0 turns a rounding-level
  # gradient difference on a near-zero gradient into a visible step difference, so the criterion
  # is relative to how far training moved the parameters.
  moved = _global_norm_diff(s1.params, jax.device_get(state.params))
  assert moved > 1e-2
  assert _global_norm_diff(s1.params, s4.params) < 1e-3 * moved
  assert _max_abs_diff(s1.sn_state, s4.sn_state) < 1e-5
  # From the same state, the first step's metrics agree to rounding.
  for k in ("loss", "rec_loss", "ebm_loss", "f_prior", "grad_norm/generator"):
    np.testing.assert_allclose(m1[k], m4[k], rtol=1e-5, atol=1e-6)


def test_batch_norm_uses_global_batch_statistics_on_any_device_count(tiny_config):
  # With batch norm, statistics are averaged over the pmap axis: the 4-device step normalises with
  # the statistics of the global batch, as one device does, and the running averages agree.
  tiny_config.model.family = "vlae_small"
  tiny_config.model.channels = (8, 16, 32)
  tiny_config.model.batch_norm = True
  model, state = _model_and_state(tiny_config)
  assert state.batch_stats and jax.tree.leaves(state.batch_stats)
  source = input_pipeline.load_split(tiny_config.data, "train")
  batch = input_pipeline.train_batch(source, 16, 0, 0)
  results = {}
  for n in (1, 4):
    devices = jax.devices()[:n]
    step = jax.pmap(lambda s, b, k: train.train_step(model, s, b, k, axis_name=train.AXIS),
                    axis_name=train.AXIS, in_axes=(None, 0, None), out_axes=None, devices=devices)
    results[n] = jax.device_get(step(state, train.shard_batch({"image": batch["image"]}, devices),
                                     jax.random.PRNGKey(3)))
  (s1, m1), (s4, m4) = results[1], results[4]
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  assert _max_abs_diff(s1.batch_stats, s4.batch_stats) < 1e-5
  assert _max_abs_diff(s1.batch_stats, jax.device_get(state.batch_stats)) > 1e-4  # they moved


def test_draws_depend_on_the_global_example_index_not_the_device_split():
  key = jax.random.PRNGKey(0)
  whole = train.draw_step_randomness(key, 7, jnp.arange(8), latent_dim=3, n_steps=4)
  half = train.draw_step_randomness(key, 7, jnp.arange(4, 8), latent_dim=3, n_steps=4)
  np.testing.assert_array_equal(whole.eps[4:], half.eps)
  np.testing.assert_array_equal(whole.langevin_noise[:, 4:], half.langevin_noise)
  assert whole.langevin_noise.shape == (4, 8, 3)
  other_step = train.draw_step_randomness(key, 8, jnp.arange(8), latent_dim=3, n_steps=4)
  assert not np.allclose(whole.eps, other_step.eps)


def test_gaussian_prior_trains_through_the_same_step(tiny_config):
  tiny_config.prior.type = "gaussian"
  model, state = _model_and_state(tiny_config)
  assert model.prior is None and state.params["prior"] == {} and state.sn_state == {}
  batch = input_pipeline.train_batch(input_pipeline.load_split(tiny_config.data, "train"), 20, 0, 0)
  new_state, metrics = jax.jit(lambda s, b, k: train.train_step(model, s, b, k))(
      state, {"image": batch["image"]}, jax.random.PRNGKey(0))
  assert "ebm_loss" not in metrics and float(metrics["f_posterior"]) == 0.0
  assert _max_abs_diff(new_state.params["generator"], state.params["generator"]) > 0


def test_lr_decays_per_epoch_and_weight_decay_is_coupled(tiny_config):
  tiny_config.optim.lr_decay = 0.5
  model = train.create_model(tiny_config, steps_per_epoch=3)
  sched = dict(model.schedules)
  lr = tiny_config.optim.lr_generator
  np.testing.assert_allclose([float(sched["generator"](s)) for s in (0, 2, 3, 6)],
                             [lr, lr, lr / 2, lr / 4], rtol=1e-6)
  # Coupled L2: with a zero gradient, Adam's first step moves w by lr * sign(decay * w).
  params = {"encoder": {"w": jnp.array([2.0, -3.0])}, "generator": {"w": jnp.array([1.0])}}
  opt = model.tx_gi.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = model.tx_gi.update(zeros, opt, params)
  np.testing.assert_allclose(updates["encoder"]["w"], [-lr, lr], rtol=1e-3)


def _run(config, workdir):
  state = train.train_and_evaluate(config, str(workdir))
  return jax.device_get(state)


def _tree_digest(path):
  digest = hashlib.sha256()
  for f in sorted(pathlib.Path(path).rglob("*")):
    if f.is_file():
      digest.update(str(f.relative_to(path)).encode())
      digest.update(f.read_bytes())
  return digest.hexdigest()


@pytest.mark.slow
def test_resume_continues_exactly_and_writes_outputs(tmp_path):
  def config(num_steps):
    # Three steps per dispatch (one lax.scan call each), through the whole loop; exact resumption
    # of single-step runs is tested end to end in test_reliability.
    c = tiny_digits_config()
    c.train.num_steps = num_steps
    c.train.steps_per_dispatch = c.logging.log_every_steps = 3
    return c

  straight = _run(config(6), tmp_path / "straight")
  _run(config(3), tmp_path / "resumed")
  resumed = _run(config(6), tmp_path / "resumed")

  assert int(straight.step) == int(resumed.step) == 6
  assert _max_abs_diff(straight.params, resumed.params) == 0.0
  assert _max_abs_diff(straight.opt_state_gi, resumed.opt_state_gi) == 0.0
  assert _max_abs_diff(straight.sn_state, resumed.sn_state) == 0.0

  workdir = tmp_path / "resumed"
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  assert list(workdir.glob("events.out.tfevents.*"))
  pngs = sorted(p.name for p in (workdir / "images").glob("*.png"))
  # Each run writes images at its last step (3, then 6).
  assert pngs == [f"{name}_0000000{t}.png" for name in ("hierarchical", "reconstructions", "samples")
                  for t in (3, 6)], pngs


@pytest.mark.slow
def test_incompatible_checkpoint_fails_clearly_and_is_left_untouched(tmp_path):
  config = tiny_digits_config()
  config.train.num_steps = 3
  _run(config, tmp_path)
  before = _tree_digest(tmp_path / "checkpoints")

  other = tiny_digits_config()
  other.model.z_dims = (2, 2, 5)
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match=r"model\.z_dims"):
    train.train_and_evaluate(other, str(tmp_path))
  assert _tree_digest(tmp_path / "checkpoints") == before


def test_a_workdir_that_is_a_file_is_refused_and_left_alone(tmp_path):
  afile = tmp_path / "notes.txt"
  afile.write_text("keep me")
  with pytest.raises(ValueError, match=r"--workdir=.*notes\.txt is a file, not a directory"):
    train.train_and_evaluate(tiny_digits_config(), str(afile))
  with pytest.raises(ValueError, match=r"--workdir=.*notes\.txt/run cannot be created"):
    train.train_and_evaluate(tiny_digits_config(), str(afile / "run"))
  assert afile.read_text() == "keep me"


@pytest.mark.slow
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(tmp_path):
  config = tiny_digits_config()
  config.train.num_steps = 2
  config.checkpoint.every_steps = 1
  _run(config, tmp_path)
  (tmp_path / "checkpoints" / "2" / "state" / "_METADATA").write_text("damaged")
  config.train.num_steps = 3
  state = _run(config, tmp_path)
  assert int(state.step) == 3
  names = sorted(os.listdir(tmp_path / "checkpoints"))
  assert [n for n in names if n.isdigit()] == ["1", "2", "3"]
  assert len([n for n in names if n.startswith("2.damaged-unreadable-")]) == 1


def test_divergence_guard_names_the_step_range():
  from hebm_jax import divergence  # pylint: disable=g-import-not-at-top
  guard = divergence.Guard(max_abs_ebm_loss=1e3)
  pending = [(11, {"loss": jnp.float32(1.0), "ebm_loss": jnp.float32(0.1)}),
             (12, {"loss": jnp.float32(np.nan), "ebm_loss": jnp.float32(0.1)}),
             (13, {"loss": jnp.float32(1.0), "ebm_loss": jnp.float32(0.1)})]
  with pytest.raises(train.DivergenceError, match=r"steps 11-13 \(first bad step 12\): loss"):
    guard.check(pending)
  exploding = [(5, {"loss": jnp.float32(1.0), "ebm_loss": jnp.float32(-2e3)})]
  with pytest.raises(train.DivergenceError, match="max_abs_ebm_loss"):
    guard.check(exploding)
  kept, skipped = divergence.Guard().check(exploding)
  assert kept[0]["ebm_loss"] == -2e3 and skipped == 0


def test_divergence_guard_bounds_energies_and_norms_and_counts_skips():
  from hebm_jax import divergence  # pylint: disable=g-import-not-at-top
  guard = divergence.Guard(max_abs_energy=1e4, max_norm=1e6, max_consecutive_skips=2)
  # A runaway EBM: f(z+) explodes while the contrastive loss stays small (lr_prior = 1e6).
  runaway = [(7, {"loss": 1.0, "ebm_loss": 0.5, "f_posterior": 5e6, "f_prior": 5e6})]
  with pytest.raises(divergence.DivergenceError, match=r"\|f_posterior\| = 5e\+06 > train.max_abs_energy"):
    guard.check(runaway)
  with pytest.raises(divergence.DivergenceError, match="grad_norm/prior = 2e\+07 > train.max_norm"):
    guard.check([(8, {"loss": 1.0, "grad_norm/prior": 2e7})])
  skip = lambda s: (s, {"loss": np.nan, "skipped": 1.0})
  kept, skipped = guard.check([skip(1), skip(2), (3, {"loss": 2.0, "skipped": 0.0})])
  assert skipped == 2 and kept == [{"loss": 2.0}] and guard.consecutive_skips == 0
  with pytest.raises(divergence.DivergenceError, match="3 non-finite updates in a row"):
    guard.check([skip(4), skip(5), skip(6)])
  assert divergence.summarize([{"loss": 1.0}, {"loss": 3.0}], 1) == {"loss": 2.0, "skipped": 1.0}


def test_batch_order_is_a_function_of_seed_and_step():
  source = input_pipeline.load_digits("train", 16)
  assert len(source) == 1497
  a = input_pipeline.global_batch_indices(len(source), 100, seed=0, step=20)
  np.testing.assert_array_equal(a, input_pipeline.global_batch_indices(len(source), 100, 0, 20))
  assert not np.array_equal(a, input_pipeline.global_batch_indices(len(source), 100, 1, 20))
  # One epoch visits distinct examples.
  epoch = np.concatenate([input_pipeline.global_batch_indices(len(source), 100, 0, s)
                          for s in range(14)])
  assert len(np.unique(epoch)) == 1400
  # Hosts' shares tile the global batch.
  whole = input_pipeline.train_batch(source, 100, 0, 3)
  parts = [input_pipeline.train_batch(source, 100, 0, 3, p, 4) for p in range(4)]
  np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), whole["image"])
  assert whole["image"].shape == (100, 16, 16, 1)
  assert whole["image"].min() >= -1.0 and whole["image"].max() <= 1.0
  assert whole["image"].min() == -1.0 and whole["image"].max() > 0.9


def test_digits_splits_are_disjoint_and_labelled():
  train_split = input_pipeline.load_digits("train", 8)
  test_split = input_pipeline.load_digits("test", 8)
  assert len(train_split) + len(test_split) == 1797
  flat = lambda s: {x.tobytes() for x in s.images}
  assert len(flat(train_split) & flat(test_split)) < 5  # a few digits are pixel-identical
  assert set(np.unique(test_split.labels)) == set(range(10))
  with pytest.raises(ValueError, match="splits 'train' and 'test'"):
    input_pipeline.load_digits("validation", 8)


def test_missing_tfds_dataset_names_the_dataset(tiny_config, tmp_path):
  tiny_config.data.name = "mnist"
  tiny_config.data.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="config.data.name='mnist'"):
    input_pipeline.load_split(tiny_config.data, "train")


def test_tfds_source_reads_mock_data(tiny_config):
  tfds = pytest.importorskip("tensorflow_datasets")
  tiny_config.data.name = "mnist"
  tiny_config.data.image_size = 28
  with tfds.testing.mock_data(num_examples=12):
    source = input_pipeline.load_split(tiny_config.data, "train")
    input_pipeline.check_source(source, tiny_config.data)
    batch = input_pipeline.train_batch(source, 4, 0, 0)
  assert batch["image"].shape == (4, 28, 28, 1) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["label"].shape == (4,)


def test_image_size_mismatch_is_reported_before_training(tiny_config):
  source = input_pipeline.load_split(tiny_config.data, "train")
  tiny_config.data.channels = 3
  with pytest.raises(ValueError, match=r"\(16, 16, 1\).*\(16, 16, 3\)"):
    input_pipeline.check_source(source, tiny_config.data)


@pytest.mark.slow
@pytest.mark.parametrize("override,field", [
    ("--config.sampler.step_size=-0.1", "config.sampler.step_size"),
    ("--config.model.family=stack", "config.model.family"),
    ("--config.data.name=imagenet", "config.data.name"),
    ("--config.data.train_split=validation", "config.data.train_split"),
])
def test_main_rejects_a_bad_config_before_compiling(tmp_path, override, field):
  proc = subprocess.run(
      [sys.executable, "main.py", "--config=configs/digits.py", f"--workdir={tmp_path}", override],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
  assert proc.returncode != 0
  assert field in proc.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_state_from_params_positions_the_lr_schedule_at_step(tiny_config):
  tiny_config.optim.lr_decay = 0.5
  model = train.create_model(tiny_config, steps_per_epoch=2)
  params, sn_state = train.init_params(model, jax.random.PRNGKey(0), (16, 16, 1))
  state = train.state_from_params(model, params, sn_state, step=4)  # epoch 2
  batch = input_pipeline.train_batch(input_pipeline.load_split(tiny_config.data, "train"), 20, 0, 4)
  _, metrics = jax.jit(lambda s, b, k: train.train_step(model, s, b, k))(
      state, {"image": batch["image"]}, jax.random.PRNGKey(0))
  np.testing.assert_allclose(metrics["lr/generator"], tiny_config.optim.lr_generator / 4, rtol=1e-6)
  counts = [leaf for leaf in jax.tree.leaves(state.opt_state_gi) if leaf.ndim == 0]
  assert sorted(int(c) for c in counts) == [0, 4, 4]  # Adam restarts; both schedules at step 4


def test_a_batch_larger_than_the_split_is_refused_before_training(tmp_path):
  config = tiny_digits_config()
  config.train.batch_size = 2000
  config.eval.batch_size = 20
  with pytest.raises(ValueError, match=r"config\.train\.batch_size=2000 is larger than the 1497"):
    train.train_and_evaluate(config, str(tmp_path))
  config.train.batch_size = 20
  config.eval.batch_size = 400
  with pytest.raises(ValueError, match=r"config\.eval\.batch_size=400 is larger than the 300"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_optimiser_state_layout_is_that_of_existing_checkpoints(tiny_config):
  """Options that are off must not change the optimiser chains: checkpoints store their states
  by position, so an extra (even stateless) element would make every existing checkpoint
  unreadable."""
  import optax  # pylint: disable=g-import-not-at-top
  _, state = _model_and_state(tiny_config)
  assert len(state.opt_state_gi) == 3 and isinstance(state.opt_state_gi[1], optax.ScaleByAdamState)
  assert len(state.opt_state_prior) == 2
  assert isinstance(state.opt_state_prior[0], optax.ScaleByAdamState)


def test_the_pmapped_step_traces_once_and_donates_the_old_state(tiny_config, monkeypatch):
  traces = []
  from hebm_jax import train_step  # pylint: disable=g-import-not-at-top
  inner = train_step.train_step_from_draws

  def counting(*args, **kwargs):
    traces.append(1)
    return inner(*args, **kwargs)

  monkeypatch.setattr(train_step, "train_step_from_draws", counting)
  model, state = _model_and_state(tiny_config)
  state = jax.device_put(jax.device_get(state), checkpointing.local_replicated_sharding())
  source = input_pipeline.load_split(tiny_config.data, "train")
  p_step = train.make_p_train_step(model)
  key = jax.random.PRNGKey(0)
  for t in range(3):
    batch = input_pipeline.train_batch(source, 8 * jax.local_device_count(), 0, t)
    old = state
    state, metrics = p_step(state, train.shard_batch({"image": batch["image"]}), key)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old.params))
  jax.block_until_ready(metrics)
  assert len(traces) == 1
  assert int(state.step) == 3
