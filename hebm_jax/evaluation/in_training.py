"""The metrics of `config.eval.train_metrics`, run by the trainer at each of its evals.

Table 3's protocol averages AUPRC over the last epochs of training; with `train_metrics=anomaly`
the curve is in the run's own TensorBoard (`eval/anomaly/auprc`) as it trains, without a second
process following the checkpoints. Each metric's key is the one `--mode=eval` and the follower use
at that step (`session.eval_key`), so the trainer's number at a checkpointed step is the number
`--mode=eval` gives for that checkpoint.

Scalars only: figures and the results file stay with `--mode=eval` and the follower. The metrics
run in the trainer's process, on a one-device copy of the parameters, so a multi-process run is
refused here: its state is not all addressable from one process.
"""

from __future__ import annotations

import jax

from hebm_jax import train_state
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation.evaluators import EvalData
from hebm_jax.evaluation.session import eval_key, metric_names, resolve_metrics


def check(config, process_count: int = 1) -> list[type]:
  """The evaluator classes of config.eval.train_metrics (none by default), each checked.

  Runs before the trainer compiles or writes anything.

  Raises:
    ConfigError: an unknown or repeated name, a metric that does not fit the experiment, or any
      metric at all in a run of several processes.
  """
  classes = resolve_metrics(config, "train_metrics", allow_empty=True)
  if classes and process_count > 1:
    raise ConfigError(
        f"config.eval.train_metrics: {', '.join(metric_names(config.eval.train_metrics))} cannot "
        f"run inside a training of {process_count} processes; evaluate its checkpoints with "
        "--config.eval.follow=True (or --mode=eval) instead, and leave train_metrics empty.")
  return classes


class TrainMetrics:
  """The evaluators of config.eval.train_metrics, set up once per training run.

  Building it opens the data the metrics read, so a missing split fails before training starts.
  """

  def __init__(self, config, metric_classes: list[type]):
    self.config, self.evaluators = config, []
    if not metric_classes:  # the usual case: nothing to set up at the trainer's start
      return
    # A model without the run's schedules: evaluators only call `apply`.
    model = train_state.create_model(config, steps_per_epoch=1)
    data = EvalData(config, model)
    self.evaluators = [cls(config, model, data) for cls in metric_classes]

  def run(self, state, step: int) -> dict[str, float]:
    """Every metric's scalars on the live train state at `step` ({} without metrics).

    Args:
      state: the trainer's `TrainState` (replicated over the local devices or not).
      step: the training step the state has reached.
    """
    if not self.evaluators:
      return {}
    # One device's copy: the metrics' jitted programs would otherwise repeat every batch on each
    # device the training state is replicated over.
    state = jax.device_put(jax.device_get(state), jax.local_devices()[0])
    scalars = {}
    for ev in self.evaluators:
      out = ev.run(state, step, ev.key_for(eval_key(self.config.seed, step)), with_figures=False)
      scalars.update(out.scalars)
    return scalars
