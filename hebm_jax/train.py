"""Training: the loop that runs the train step, logs, checkpoints, writes images and evaluates.

`train_and_evaluate` runs its stages in order: load and check the data, set up (workdir, model,
keys, checkpoint manager), restore, open the TensorBoard writer, compile, then the step loop with
its periodic actions (log, checkpoint, images, eval) and shutdown. The pieces live below it:
  train_state   `HEBM` (the static model description), `TrainState`, optimisers and schedules;
  train_step    the random draws, `train_step`, `eval_step`, their pmapped forms, batch placement;
  train_images  the image grids written during training.
Their public names are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time

import jax
import numpy as np
from absl import logging

from hebm_jax import (checkpointing, compile_cache, device_prefetch, divergence,
                      input_pipeline, preemption, progress, summary_writer, workdir_lock,
                      xla_options)
from hebm_jax.config_validation import validate_config
from hebm_jax.evaluation import in_training, prior_kl
from hebm_jax.evaluation.session import eval_key
from hebm_jax.evaluation.evaluators import prior_kl as prior_kl_settings
from hebm_jax.train_images import image_summaries, write_images
from hebm_jax.train_state import (
    HEBM, TrainState, create_model, create_train_state, init_params, init_variables, lr_schedule,
    make_optimizers, network_variables, state_from_params)
from hebm_jax.train_step import (
    AXIS, StepDraws, dispatch_size, draw_step_randomness, eval_step, evaluate, make_p_eval_step,
    make_p_train_step, shard_batch, stack_batches, train_step, train_step_from_draws, train_steps)

DivergenceError = divergence.DivergenceError  # where callers have always found it
load_run_state = divergence.load_run_state

__all__ = [
    "AXIS", "DivergenceError", "HEBM", "StepDraws", "TrainState", "create_model",
    "create_train_state", "dispatch_size", "draw_step_randomness", "eval_step", "evaluate",
    "image_summaries", "init_params", "init_variables",
    "load_run_state", "lr_schedule", "make_optimizers", "make_p_eval_step", "make_p_train_step",
    "network_variables", "shard_batch", "stack_batches", "state_from_params", "train_and_evaluate",
    "train_step", "train_step_from_draws", "train_steps",
]


@workdir_lock.released_on_exit
def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains (resuming from `workdir` if it holds a checkpoint), logs, checkpoints and evaluates.

  Writes to `workdir`: `checkpoints/` (orbax, with the config), TensorBoard event files, and
  `images/*.png` grids. Returns the final train state.

  Raises:
    preemption.TrainingInterrupted: after SIGTERM/SIGINT, once a checkpoint of the step in
      progress is saved (resume by calling again).
    divergence.DivergenceError: training diverged (after the restores `train.on_divergence`
      allows); the newest checkpoint on disk is the last good state.
  """
  validate_config(config, jax.device_count())
  prior_kl_settings.check_settings(config)  # every training eval logs prior_kl
  train_metrics = in_training.check(config, jax.process_count())
  data = _load_data(config)
  run = _Run(config, workdir, data, in_training.TrainMetrics(config, train_metrics))
  restored_step = run.restore()
  run.open_writer(write_hparams=restored_step is None)
  run.compile()
  run.train()
  return run.state


@dataclasses.dataclass(frozen=True)
class _Data:
  """The two splits of a run and the epoch length of its learning-rate schedules."""
  train: input_pipeline.Source
  eval: input_pipeline.Source
  steps_per_epoch: int


def _load_data(config) -> _Data:
  """The data first: a missing dataset or a batch larger than its split is reported before
  TensorFlow is imported and before anything is created in the workdir."""
  train_source = input_pipeline.load_split(config.data, config.data.train_split)
  eval_source = input_pipeline.load_split(config.data, config.data.eval_split)
  for source in (train_source, eval_source):
    input_pipeline.check_source(source, config.data)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_source), config.train.batch_size)
  input_pipeline.steps_per_epoch(len(eval_source), config.eval.batch_size, "eval.batch_size")
  return _Data(train_source, eval_source, config.optim.steps_per_epoch or steps_per_epoch)


class _Run:
  """One call of `train_and_evaluate`: what its stages share, from set-up to shutdown."""

  def __init__(self, config, workdir: str, data: _Data, train_metrics: in_training.TrainMetrics):
    """Set-up: the workdir, the model at this run's learning rates, the keys, the initial state."""
    self.config, self.workdir, self.data = config, workdir, data
    self.train_metrics = train_metrics
    checkpointing.ensure_workdir(workdir)
    # One training writer per workdir: a second trainer stops here, having written nothing.
    workdir_lock.acquire(workdir, config)  # released on return or error (the decorator)
    if jax.process_index() == 0:
      summary_writer.check_writable(workdir)  # before any compilation
    compile_cache.use(config.train.get("compilation_cache", ""), workdir)
    self.run_state = divergence.load_run_state(workdir)
    self.model = self._make_model()
    root = jax.random.PRNGKey(config.seed)
    init_key, self.base_train_key, self.image_key = (jax.random.fold_in(root, i) for i in range(3))
    self.train_key = self._train_key()
    self.manager = checkpointing.make_manager(workdir, config.checkpoint.max_to_keep)
    image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
    self.init_state = jax.jit(functools.partial(create_train_state, self.model,
                                                image_shape=image_shape))(init_key)

  def _make_model(self) -> HEBM:
    factor = self.config.train.restore_lr_factor ** self.run_state["restores"]
    config = divergence.scaled_learning_rates(self.config, factor)
    return create_model(config, self.data.steps_per_epoch)

  def _train_key(self) -> jax.Array:
    # After a divergence restore, fresh draws: the same ones would lead to the same blow-up.
    restores = self.run_state["restores"]
    return jax.random.fold_in(self.base_train_key, restores) if restores else self.base_train_key

  def restore(self) -> int | None:
    """The newest checkpoint in the workdir, else the initial state; returns the restored step."""
    state, restored_step = checkpointing.restore(self.manager, self.init_state, self.config)
    if restored_step is not None:
      logging.info("Resumed from %s at step %d.", self.manager.directory, restored_step)
    elif self.config.train.on_divergence == "restore":
      checkpointing.save(self.manager, 0, state, self.config)  # something to go back to
    # Committed up front, so the step compiles once (not again when its outputs come back). A
    # fresh copy: the step donates its input, and `init_state` must stay readable for restores.
    self.state = jax.device_put(jax.device_get(state), checkpointing.local_replicated_sharding())
    self.step = int(jax.device_get(self.state.step))
    return restored_step

  def open_writer(self, write_hparams: bool) -> None:
    """TensorBoard only: the console gets one progress line per log interval (`_log`)."""
    self.writer = (summary_writer.AsyncWriter(summary_writer.SummaryWriter(self.workdir))
                   if jax.process_index() == 0 else summary_writer.NoOpWriter())
    if write_hparams:
      self.writer.write_hparams(_flatten(checkpointing.config_to_dict(self.config)))

  def compile(self) -> None:
    """The pmapped train and eval steps and the image summaries, with the config's XLA options."""
    c = self.config
    self.per_call = c.train.get("steps_per_dispatch", 1)
    self.options = xla_options.for_config(c.train)
    self._compile_train_steps()
    self.p_eval_step = make_p_eval_step(self.model, self.options)
    self.summaries = xla_options.compile_with(
        jax.jit(functools.partial(image_summaries, self.model, num=c.logging.num_images)),
        self.options)
    self.eval_images = next(input_pipeline.eval_batches(
        self.data.eval, min(16, len(self.data.eval)), 1))["image"]

  def _compile_train_steps(self) -> None:
    self.p_train_step = make_p_train_step(self.model, compiler_options=self.options)
    self.p_train_chunk = (make_p_train_step(self.model, self.per_call, self.options)
                          if self.per_call > 1 else None)

  def train(self) -> None:
    """The step loop up to `train.num_steps`, then shutdown (also when it raises)."""
    c = self.config
    self.report = progress.ReportProgress(num_train_steps=c.train.num_steps, writer=self.writer)
    logging.info("Training %s from step %d to %d on %d device(s), %d process(es), %d steps/epoch.",
                 c.data.name, self.step, c.train.num_steps, jax.device_count(),
                 jax.process_count(), self.data.steps_per_epoch)
    self.guard = divergence.Guard.from_config(c.train)
    self._start_batches()
    self.stop = preemption.StopRequest(sync_every=c.logging.log_every_steps)
    try:
      with self.stop:
        while self.step < c.train.num_steps:
          try:
            self._dispatch()
          except divergence.DivergenceError as e:
            if (c.train.on_divergence != "restore"
                or self.run_state["restores"] >= c.train.max_restores):
              raise
            self._restore_after_divergence(e)
    except BaseException:
      self._shutdown(failed=True)
      raise
    self._shutdown()

  def _start_batches(self) -> None:
    """Batches from `self.step` on, and fresh logging windows."""
    c = self.config
    # grain prepares host batches ahead (worker processes); a thread places the next one on the
    # devices while the current step runs, and measures how long each step waited for it.
    host = input_pipeline.train_iterator(
        self.data.train, c.data, c.train.batch_size, c.seed, self.step, c.train.num_steps,
        jax.process_index(), jax.process_count())
    # With train.steps_per_dispatch > 1 the host batches travel as stacked chunks.
    groups = stack_batches(host, self.step, c.train.num_steps, self.per_call)
    self.host_batches, self.device_batches = host, device_prefetch.DevicePrefetcher(
        groups, lambda g: (g[0], shard_batch({"image": g[1]["image"]}, stacked=g[0] > 1)),
        size=2)
    self.pending: list[tuple[int, dict]] = []
    self.window: list[dict] = []  # checked metrics of the steps since the last log line
    self.skipped = 0
    self.last_log_time, self.last_log_step, self.input_wait = time.time(), self.step, 0.0

  def _dispatch(self) -> None:
    """One device call (1 or `train.steps_per_dispatch` steps), then the actions now due."""
    c = self.config
    n, batch = next(self.device_batches)
    self.state, metrics = (self.p_train_chunk if n > 1 else self.p_train_step)(
        self.state, batch, self.train_key)
    self.input_wait += self.device_batches.last_wait_s
    self.step += n
    step = self.step
    self.pending.append((step, metrics))
    self.report(step, time.time())
    is_last = step == c.train.num_steps
    stopping = self.stop.should_stop(step) or self.manager.reached_preemption(step)
    if step % c.logging.log_every_steps == 0 or is_last:
      self._log()
    if step % c.checkpoint.every_steps == 0 or is_last or stopping:
      self._check_pending()  # never save a diverged state
      workdir_lock.check_held(self.workdir, step)  # never overwrite a run that took over
      checkpointing.save(self.manager, step, self.state, c)
    if stopping:
      self.manager.wait_until_finished()
      raise preemption.TrainingInterrupted(self.stop.signum or signal.SIGTERM, step)
    if step % c.logging.image_every_steps == 0 or is_last:
      with self.report.timed("images"):
        write_images(self.writer, self.workdir, step, self.summaries(
            self.state, jax.random.fold_in(self.image_key, step), self.eval_images))
    if step % c.eval.every_steps == 0 or is_last:
      with self.report.timed("eval"):
        result = evaluate(self.model, self.p_eval_step, self.state, self.data.eval, c)
        # Whether the EBM has moved away from N(0, I) at all, at a glance (issue: a prior that
        # stays at 0.1 nats cannot change what the latents encode).
        result.update(prior_kl.prior_kl_scalars(
            self.model, self.state, eval_key(c.seed, step), c))
        extra = self.train_metrics.run(self.state, step)
      self.writer.write_scalars(step, {f"eval/{k}": v for k, v in {**result, **extra}.items()})
      # The metrics' headline numbers ('anomaly/auprc'), not their tables ('anomaly_variants/...').
      shown = "".join(f" | {k} {v:.4f}" for k, v in extra.items() if k.count("/") == 1)
      logging.info("eval at step %d | mse %.5f | rec %.3f | kl %.3f | prior kl %.3f%s", step,
                   result["mse"], result["rec_loss"], result["kl"], result["prior_kl"], shown)

  def _check_pending(self) -> None:
    """Raises `DivergenceError` if a step not yet checked diverged; moves the rest to the window."""
    kept, n_skipped = self.guard.check(self.pending)
    self.window, self.skipped, self.pending = self.window + kept, self.skipped + n_skipped, []

  def _log(self) -> None:
    """One summary of the steps since the last log line, to TensorBoard and the console."""
    self._check_pending()
    summary = divergence.summarize(self.window, self.skipped)
    self.window, self.skipped = [], 0
    now, steps = time.time(), self.step - self.last_log_step
    summary["steps_per_sec"] = steps / max(now - self.last_log_time, 1e-9)
    summary["input_wait_ms"] = 1e3 * self.input_wait / max(steps, 1)
    self.last_log_time, self.last_log_step, self.input_wait = now, self.step, 0.0
    self.writer.write_scalars(self.step, {f"train/{k}": v for k, v in summary.items()})
    logging.info("step %d/%d | loss %.3f | rec %.3f | kl %.3f | f(z+) %.4f | f(z-) %.4f "
                 "| ebm %.5f | %.1f steps/s | input wait %.2f ms/step%s", self.step,
                 self.config.train.num_steps, summary.get("loss", np.nan),
                 summary.get("rec_loss", np.nan), summary.get("kl", np.nan),
                 summary.get("f_posterior", np.nan), summary.get("f_prior", 0.0),
                 summary.get("ebm_loss", 0.0), summary["steps_per_sec"],
                 summary["input_wait_ms"],
                 f" | {int(summary['skipped'])} updates skipped" if summary["skipped"] else "")

  def _restore_after_divergence(self, e: divergence.DivergenceError) -> None:
    """Back to the newest checkpoint with fresh draws (and lower learning rates if configured)."""
    self.manager.wait_until_finished()
    if self.manager.latest_step() is None:
      raise divergence.DivergenceError(
          f"{e} There is no checkpoint to restore yet.", e.first_bad_step) from e
    self.run_state["restores"] += 1
    divergence.save_run_state(self.workdir, self.run_state)
    c = self.config
    factor = c.train.restore_lr_factor ** self.run_state["restores"]
    logging.warning("%s Restoring the last good checkpoint (restore %d of %d) with fresh "
                    "randomness%s.", e, self.run_state["restores"], c.train.max_restores,
                    f" and learning rates x{factor:g}" if factor != 1.0 else "")
    if factor != 1.0:
      self.model = self._make_model()
      self._compile_train_steps()
    self.train_key = self._train_key()
    state, _ = checkpointing.restore(self.manager, self.init_state, c)
    self.state = jax.device_put(state, checkpointing.local_replicated_sharding())
    self.step = int(jax.device_get(self.state.step))
    self.guard.consecutive_skips = 0
    self.device_batches.close()
    self.host_batches.close()
    self._start_batches()

  def _shutdown(self, failed: bool = False) -> None:
    """Stops the input threads and workers, flushes the writer, finishes pending checkpoints."""
    self.device_batches.close()
    self.host_batches.close()
    self.writer.close()
    try:
      self.manager.wait_until_finished()
      self.manager.close()
    except Exception as e:  # pylint: disable=broad-except
      if not failed:
        raise
      # Already unwinding (a divergence, an interrupt, a failed save): a second error from the
      # checkpoint writer must not replace the first.
      logging.warning("While stopping, the checkpoint writer also failed: %s", e)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = str(v) if isinstance(v, (list, tuple)) else v
  return out
