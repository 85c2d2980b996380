"""`--mode=eval`: the configured metrics on a workdir's checkpoints, beside the paper's numbers.

Every check that can fail (metric names, whether each metric fits the dataset, the checkpoints in
the workdir, the data the metrics read) runs before any checkpoint is restored or any metric
computed, and before anything is written: a failed check leaves the workdir as it was.

Writes `<workdir>/eval/results_<step>.json` (step = the newest checkpoint evaluated), figures as
`<workdir>/eval/<figure>_<step>.png`, and TensorBoard scalars and images under `<workdir>/eval/`.
With `config.eval.follow`, it follows a live training run instead (`hebm_jax.evaluation.follow`).
"""

from __future__ import annotations

from absl import logging

from hebm_jax import checkpointing
from hebm_jax.evaluation import checkpoints, follow
from hebm_jax.evaluation.checkpoints import EvaluationError  # re-exported for callers
from hebm_jax.evaluation.session import (  # re-exported: callers have found them here
    Session, _check_eval_fields, metric_names, resolve_metrics)

def run_evaluation(config, workdir: str) -> dict:
  """Evaluates `workdir`'s checkpoints on config.eval.metrics; returns the results dict written.

  With config.eval.follow, follows a live training run instead (`follow.follow`) and returns
  {step: results} of the checkpoints it evaluated.

  Args:
    config: the experiment config (validated by the caller); its architecture must match the
      checkpoints'.
    workdir: a training run's work directory.

  Raises:
    ConfigError, EvaluationError, checkpointing.IncompatibleCheckpointError: before any work.
  """
  _check_eval_fields(config)
  if config.eval.get("follow", False):
    return follow.follow(config, workdir)
  metric_classes = resolve_metrics(config)
  steps = checkpoints.select_steps(workdir, config.eval.checkpoint_step, config.eval.num_checkpoints)
  manager = checkpoints.restore_config_checked(workdir, steps, config)
  session = Session(config, workdir, metric_classes)  # opens the data it needs
  # After every check, so that a refused evaluation leaves the workdir as it was.
  session.open_writer()

  per_step, details, figures, timings = {}, {}, [], {}
  logging.info("Evaluating %s at step(s) %s: %s.", workdir, steps,
               ", ".join(ev.name for ev in session.evaluators))
  for step in steps:
    state, _ = checkpointing.restore(manager, session.abstract, config, step)
    per_step[step] = session.evaluate(state, step, step == steps[-1], timings, details, figures)
  manager.close()
  return session.write_results(steps, per_step, details, figures, timings)
