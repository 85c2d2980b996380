"""`--mode=eval`: the configured metrics on a workdir's checkpoints, beside the paper's numbers.

Every check that can fail (metric names, whether each metric fits the dataset, the checkpoints in
the workdir, the data the metrics read) runs before any checkpoint is restored or any metric
computed, and before anything is written: a failed check leaves the workdir as it was.

Writes `<workdir>/eval/results_<step>.json` (step = the newest checkpoint evaluated), figures as
`<workdir>/eval/<figure>_<step>.png`, and TensorBoard scalars and images under `<workdir>/eval/`.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import os
import sys
import time

import jax
from absl import logging
from etils import epath

from hebm_jax import checkpointing, visualization
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import results as results_lib
from hebm_jax.evaluation.evaluators import METRICS, EvalData

# Fields of config.data that change which examples a metric sees; they must match the checkpoint's.
_DATA_FIELDS = ("name", "classes", "held_out_digit", "anomaly_protocol", "image_size", "channels")
_EVAL_STREAM = 3  # fold_in index of the evaluation key (0-2 are init, training and image keys)


class EvaluationError(ValueError):
  """The workdir cannot be evaluated as configured (no checkpoint, unknown step, wrong data)."""


def metric_names(value) -> tuple[str, ...]:
  """config.eval.metrics as a tuple of names; also takes 'a,b' (how a command-line override of a
  tuple field arrives) and a single string."""
  items = (value,) if isinstance(value, str) else tuple(value)
  return tuple(n.strip() for item in items for n in str(item).split(",") if n.strip())


def resolve_metrics(config) -> list[type]:
  """The evaluator classes named in config.eval.metrics, each checked against the config.

  Raises:
    ConfigError: an empty list, an unknown name (with the closest known one), a duplicate, or a
      metric that does not fit the experiment.
  """
  names = metric_names(config.eval.metrics)
  if not names:
    raise ConfigError(f"config.eval.metrics: no metric to evaluate; choose from {sorted(METRICS)}, "
                      "e.g. --config.eval.metrics=anomaly,latent_classifier.")
  classes = []
  for name in names:
    if name not in METRICS:
      close = difflib.get_close_matches(str(name), METRICS, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"config.eval.metrics: unknown metric {name!r}.{hint} Known metrics: "
                        f"{', '.join(sorted(METRICS))}.")
    if METRICS[name] in classes:
      raise ConfigError(f"config.eval.metrics: {name!r} is listed twice.")
    classes.append(METRICS[name])
  for cls in classes:
    cls.check(config)
  return classes


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the finished checkpoints in `workdir/checkpoints` (sorted; [] when none). Reads only."""
  directory = epath.Path(checkpointing.checkpoint_dir(workdir))
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def select_steps(workdir: str, config) -> list[int]:
  """The checkpoints to evaluate: the newest eval.num_checkpoints up to eval.checkpoint_step.

  Raises:
    EvaluationError: no checkpoint in the workdir, or eval.checkpoint_step is not one of them.
  """
  steps = checkpoint_steps(workdir)
  where = checkpointing.checkpoint_dir(workdir)
  if not steps:
    raise EvaluationError(f"--workdir={workdir} holds no checkpoint (looked in {where}); train "
                          "first with --mode=train, or point --workdir at a trained run.")
  wanted = config.eval.checkpoint_step
  if wanted:
    if wanted not in steps:
      raise EvaluationError(f"config.eval.checkpoint_step={wanted}: no such checkpoint in {where}; "
                            f"it holds steps {steps}.")
    steps = [s for s in steps if s <= wanted]
  return steps[-config.eval.num_checkpoints:]


def check_data_matches(saved: dict, config) -> None:
  """Raises `EvaluationError` if the checkpoint was trained on other data than the config names."""
  diffs = []
  for field in _DATA_FIELDS:
    a = saved.get("data", {}).get(field)
    b = checkpointing.config_to_dict(config)["data"].get(field)
    if field in ("held_out_digit", "anomaly_protocol") and config.data.name != "mnist_anomaly":
      continue
    if a is not None and a != b:
      diffs.append(f"data.{field}: checkpoint {a!r} vs config {b!r} "
                   f"(pass --config.data.{field}={_flag_value(a)})")
  if diffs:
    raise EvaluationError("The checkpoints were trained on other data than the config describes:\n  "
                          + "\n  ".join(diffs))


def _flag_value(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _check_eval_fields(config) -> None:
  ev = config.eval
  if not (isinstance(ev.checkpoint_step, int) and ev.checkpoint_step >= 0):
    raise ConfigError(f"config.eval.checkpoint_step: must be a non-negative integer (0: the newest "
                      f"checkpoint), got {ev.checkpoint_step!r}.")
  if not (isinstance(ev.num_checkpoints, int) and ev.num_checkpoints > 0):
    raise ConfigError(f"config.eval.num_checkpoints: must be a positive integer, got "
                      f"{ev.num_checkpoints!r}.")


def run_evaluation(config, workdir: str) -> dict:
  """Evaluates `workdir`'s checkpoints on config.eval.metrics; returns the results dict written.

  Args:
    config: the experiment config (validated by the caller); its architecture must match the
      checkpoints'.
    workdir: a training run's work directory.

  Raises:
    ConfigError, EvaluationError, checkpointing.IncompatibleCheckpointError: before any work.
  """
  from hebm_jax import train  # pylint: disable=g-import-not-at-top

  _check_eval_fields(config)
  metric_classes = resolve_metrics(config)
  steps = select_steps(workdir, config)
  manager = checkpointing.make_manager(workdir, max(len(checkpoint_steps(workdir)), 1), create=False)
  saved = checkpointing.saved_config(manager, steps[-1])
  diffs = checkpointing.architecture_differences(saved, config)
  if diffs:
    raise checkpointing.IncompatibleCheckpointError(
        f"The checkpoints in {workdir} were written for a different model:\n  " + "\n  ".join(diffs))
  check_data_matches(saved, config)

  model = train.create_model(config, steps_per_epoch=1)  # schedules play no part in evaluation
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  abstract = jax.eval_shape(functools.partial(train.create_train_state, model,
                                              image_shape=image_shape), jax.random.PRNGKey(0))
  data = EvalData(config, model)
  evaluators = [cls(config, model, data) for cls in metric_classes]  # opens the data it needs

  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation import paper  # pylint: disable=g-import-not-at-top
  eval_dir = os.path.join(workdir, "eval")
  is_main = jax.process_index() == 0
  writer = metric_writers.SummaryWriter(eval_dir) if is_main else metric_writers.MultiWriter([])
  base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), _EVAL_STREAM)
  per_step, details, figures, timings = {}, {}, [], {}
  logging.info("Evaluating %s at step(s) %s: %s.", workdir, steps,
               ", ".join(ev.name for ev in evaluators))
  for step in steps:
    state, _ = checkpointing.restore(manager, abstract, config, step)
    newest = step == steps[-1]
    per_step[step] = {}
    for ev in evaluators:
      start = time.time()
      out = ev.run(state, step, ev.key_for(jax.random.fold_in(base_key, step)), with_figures=newest)
      timings[ev.name] = timings.get(ev.name, 0.0) + time.time() - start
      per_step[step].update(out.scalars)
      if newest:
        details[ev.name] = out.details
        for name, image in out.figures.items():
          path = os.path.join(eval_dir, f"{name}_{step:08d}.png")
          if is_main:
            visualization.save_png(image, path, scale=_png_scale(image))
          writer.write_images(step, {f"eval/{name}": image[None]})
          figures.append(path)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in per_step[step].items()})
  writer.flush()
  manager.close()

  mean, std = results_lib.aggregate(per_step)
  reported = paper.paper_numbers(config)
  table = results_lib.format_table(mean, std, reported, len(steps))
  results = {
      "workdir": os.path.abspath(workdir),
      "checkpoint_steps": steps,
      "results": mean,
      "std_over_checkpoints": std if len(steps) > 1 else {},
      "per_checkpoint": per_step,
      "paper": {k: v._asdict() for k, v in reported.items() if k in mean},
      "details": details,
      "figures": figures,
      "settings": {"seed": config.seed, "eval_batch_size": config.eval.batch_size,
                   "num_checkpoints": config.eval.num_checkpoints,
                   **{ev.name: ev.settings() for ev in evaluators}},
      "seconds": timings,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
  }
  if is_main:
    path = os.path.join(eval_dir, f"results_{steps[-1]:08d}.json")
    results_lib.write_json(path, results)
    print(f"\nEvaluation of {workdir}, checkpoint step(s) {steps}:\n{table}\nwritten: {path}",
          flush=True)
  return results


def _png_scale(image) -> int:
  return min(4, max(1, 256 // max(image.shape[:2])))  # tiny digit grids are unreadable at 1x
