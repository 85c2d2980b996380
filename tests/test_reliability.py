"""Fault injection: preemption signals, divergence policies, gradient clipping."""

import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from hebm_jax import checkpointing, divergence, input_pipeline, train
from tests.conftest import compilation_cache_of_this_process, tiny_digits_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _model_state(config):
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return model, train.create_train_state(model, jax.random.PRNGKey(0), shape)


def _batch(config):
  source = input_pipeline.load_split(config.data, "train")
  return {"image": input_pipeline.train_batch(source, config.train.batch_size, 0, 0)["image"]}


def test_skip_policy_keeps_the_state_when_an_update_is_not_finite():
  config = tiny_digits_config()
  config.train.on_divergence = "skip"
  config.optim.lr_generator = 1e39   # beyond float32: the first update is not finite
  model, state = _model_state(config)
  assert model.skip_nonfinite
  new, metrics = jax.jit(lambda s, b: train.train_step(model, s, b, jax.random.PRNGKey(1)))(
      state, _batch(config))
  assert float(metrics["skipped"]) == 1.0
  assert int(new.step) == 1
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_skip_policy_changes_nothing_on_finite_updates():
  config = tiny_digits_config()
  model, state = _model_state(config)
  config.train.on_divergence = "skip"
  skip_model, _ = _model_state(config)
  batch, key = _batch(config), jax.random.PRNGKey(1)
  plain, _ = jax.jit(lambda s: train.train_step(model, s, batch, key))(state)
  kept, metrics = jax.jit(lambda s: train.train_step(skip_model, s, batch, key))(state)
  assert float(metrics["skipped"]) == 0.0
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(kept.params)):
    np.testing.assert_array_equal(a, b)


def test_gradient_clipping_clips_what_adam_sees_and_norms_are_logged():
  import optax  # pylint: disable=g-import-not-at-top
  config = tiny_digits_config()
  config.optim.grad_clip_norm = 1.0
  tx_gi, tx_prior, _ = train.make_optimizers(config.optim, steps_per_epoch=10)
  params = {"w": np.ones(3, np.float32)}
  grads = [{"w": np.array([60.0, 80.0, 0.0], np.float32)},   # norm 100: clipped to 1
           {"w": np.array([0.3, 0.4, 0.0], np.float32)}]     # norm 0.5: unchanged
  o = config.optim
  reference = optax.chain(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
                          optax.scale(-o.lr_prior))
  state, ref_state = tx_prior.init(params), reference.init(params)
  for g in grads:
    clipped = jax.tree.map(lambda x: x * min(1.0, 1.0 / float(np.linalg.norm(x))), g)
    updates, state = tx_prior.update(g, state, params)
    expected, ref_state = reference.update(clipped, ref_state, params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-5, atol=1e-12)
  # The encoder/generator chain clips too (one extra element only when clipping is on).
  assert len(tx_gi.init({"encoder": params, "generator": params})) == 4
  model, state = _model_state(tiny_digits_config())
  _, m = jax.jit(lambda s: train.train_step(model, s, _batch(tiny_digits_config()),
                                            jax.random.PRNGKey(1)))(state)
  for name in ("update_norm/encoder", "update_norm/generator", "update_norm/prior",
               "grad_norm/prior", "param_norm/prior"):
    assert name in m and np.isfinite(float(m[name])) and float(m[name]) > 0


def _tiny_run_config(tmp_path, **train_overrides):
  config = tiny_digits_config()
  config.data.worker_count = 0
  config.train.num_steps = 8
  config.checkpoint.every_steps = 2
  config.logging.log_every_steps = 1
  config.logging.image_every_steps = 100
  config.eval.every_steps = 100
  for k, v in train_overrides.items():
    section, field = k.split("__")
    config[section][field] = v
  return config


def test_restore_policy_recovers_from_a_blow_up(tmp_path, caplog):
  config = _tiny_run_config(tmp_path, optim__lr_prior=1e6, train__on_divergence="restore",
                            train__max_restores=2, train__restore_lr_factor=1e-8)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 8
  run_state = train.load_run_state(str(tmp_path))
  assert 1 <= run_state["restores"] <= 2
  assert "Restoring the last good checkpoint (restore 1 of 2)" in caplog.text


def test_restore_policy_gives_up_after_max_restores(tmp_path):
  config = _tiny_run_config(tmp_path, optim__lr_prior=1e6, train__on_divergence="restore",
                            train__max_restores=1, train__restore_lr_factor=1.0)
  with pytest.raises(divergence.DivergenceError, match="Training diverged"):
    train.train_and_evaluate(config, str(tmp_path))
  assert train.load_run_state(str(tmp_path))["restores"] == 1


def test_stop_policy_leaves_the_last_good_checkpoint_newest(tmp_path):
  config = _tiny_run_config(tmp_path, optim__lr_prior=1e6)
  with pytest.raises(divergence.DivergenceError, match="Training diverged.*train.max_"):
    train.train_and_evaluate(config, str(tmp_path))
  manager = checkpointing.make_manager(str(tmp_path), 5, create=False)
  steps = list(manager.all_steps())
  manager.close()
  # Nothing from the diverged steps was saved: only checkpoints whose metrics passed the guard.
  assert all(s < 2 for s in steps)


# ---------------------------------------------------------------------------------------------
# Preemption: a subprocess is signalled mid-run, saves, exits; the resumed run ends bit-identical.

_TINY_FLAGS = ["--config=configs/digits.py", "--config.model.z_dims=(2,2,4)",
               "--config.model.channels=(8,16,32)", "--config.prior.num_layers=2",
               "--config.prior.width=16", "--config.sampler.n_steps=5",
               "--config.train.batch_size=20", "--config.train.num_steps=60",
               "--config.checkpoint.every_steps=1000", "--config.logging.log_every_steps=5",
               "--config.logging.image_every_steps=1000", "--config.eval.every_steps=1000",
               "--config.data.worker_count=0"]


def _final_params(workdir, config):
  model, template = _model_state(config)
  manager = checkpointing.make_manager(str(workdir), 5, create=False)
  state, step = checkpointing.restore(manager, template, config)
  manager.close()
  return step, state.params


def _config_from_flags():
  config = tiny_digits_config()
  config.train.num_steps = 60
  config.data.worker_count = 0
  return config


@pytest.mark.slow
@pytest.mark.parametrize("sig, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_step_in_progress_and_resume_is_exact(tmp_path, sig, exit_code):
  # The cache of this test process's tiny runs: the subprocesses load its programs (one at a time;
  # this process waits for each).
  flags = [*_TINY_FLAGS, f"--config.train.compilation_cache={compilation_cache_of_this_process()}"]
  cmd = [sys.executable, "main.py", f"--workdir={tmp_path / 'run'}", *flags]
  proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          text=True)
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if "step 10/60" in line:
      proc.send_signal(sig)
      break
  _, rest = proc.communicate(timeout=300)
  log = "".join(seen) + rest
  assert proc.returncode == exit_code, log[-3000:]
  assert f"{signal.Signals(sig).name} received: saved a checkpoint at step" in log
  assert "Traceback" not in log
  saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert len(saved) == 1 and 10 <= saved[0] < 60
  # Resume to the end, and run the same job without interruption.
  for workdir in ("run", "straight"):
    done = subprocess.run([sys.executable, "main.py", f"--workdir={tmp_path / workdir}",
                           *flags], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
  config = _config_from_flags()
  step_a, a = _final_params(tmp_path / "run", config)
  step_b, b = _final_params(tmp_path / "straight", config)
  assert step_a == step_b == 60
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("field, value, match", [
    ("train.batch_size", 4000, "config.train.batch_size=4000 is larger than the 1497 examples"),
    ("data.name", "svhn_cropped", "svhn_cropped"),
])
def test_data_errors_come_before_the_workdir_is_created(tmp_path, field, value, match):
  from hebm_jax.config_validation import ConfigError  # pylint: disable=g-import-not-at-top
  config = tiny_digits_config()
  section, name = field.split(".")
  config[section][name] = value
  if name == "name":  # a dataset that is not prepared under data_dir
    config.data.update(data_dir=str(tmp_path / "no_tfds"), image_size=32, channels=3)
  with pytest.raises((ConfigError, FileNotFoundError), match=match):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_stop_request_first_signal_asks_second_ctrl_c_stops_at_once():
  from hebm_jax import preemption  # pylint: disable=g-import-not-at-top
  with preemption.StopRequest() as stop:
    assert signal.getsignal(signal.SIGTERM) == stop._handle  # pylint: disable=protected-access
    assert not stop.should_stop(1)
    stop._handle(signal.SIGINT, None)  # pylint: disable=protected-access
    assert stop.should_stop(2) and stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      stop._handle(signal.SIGINT, None)  # pylint: disable=protected-access
  assert signal.getsignal(signal.SIGTERM) != stop._handle  # pylint: disable=protected-access
  interrupted = preemption.TrainingInterrupted(signal.SIGINT, 7)
  assert interrupted.exit_code == 130 and "step 7" in str(interrupted)
  assert preemption.TrainingInterrupted(signal.SIGTERM, 7).exit_code == 143
