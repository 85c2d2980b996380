"""An evaluation session: the model, the metrics' evaluators and the eval writer of one workdir.

`driver.run_evaluation` (`--mode=eval`) evaluates selected checkpoints with one; `follow.follow`
(`--config.eval.follow=True`) evaluates each new checkpoint of a live run with one.
"""

from __future__ import annotations

import datetime
import difflib
import os
import sys
import time

import jax

from hebm_jax import (compile_cache, fileio, summary, summary_writer, train_state,
                      visualization)
from hebm_jax.config_validation import ConfigError
from hebm_jax.evaluation import results as results_lib
from hebm_jax.evaluation.evaluators import METRICS, EvalData

_EVAL_STREAM = 3  # fold_in index of the evaluation key (0-2 are init, training and image keys)


def eval_key(seed: int, step: int) -> jax.Array:
  """The key of every metric's evaluation of checkpoint `step` (each metric then takes its own
  stream, `Evaluator.key_for`): the same in `--mode=eval`, the follower and the trainer."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), _EVAL_STREAM), step)


def metric_names(value) -> tuple[str, ...]:
  """config.eval.metrics as a tuple of names; also takes 'a,b' (how a command-line override of a
  tuple field arrives) and a single string."""
  items = (value,) if isinstance(value, str) else tuple(value)
  return tuple(n.strip() for item in items for n in str(item).split(",") if n.strip())


def resolve_metrics(config, field: str = "metrics", allow_empty: bool = False) -> list[type]:
  """The evaluator classes named in config.eval.<field>, each checked against the config.

  Raises:
    ConfigError: an empty list (unless `allow_empty`), an unknown name (with the closest known
      one), a duplicate, or a metric that does not fit the experiment.
  """
  names = metric_names(config.eval[field])
  if not names and not allow_empty:
    raise ConfigError(f"config.eval.{field}: no metric to evaluate; choose from {sorted(METRICS)}, "
                      f"e.g. --config.eval.{field}=anomaly,latent_classifier.")
  classes = []
  for name in names:
    if name not in METRICS:
      close = difflib.get_close_matches(str(name), METRICS, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"config.eval.{field}: unknown metric {name!r}.{hint} Known metrics: "
                        f"{', '.join(sorted(METRICS))}.")
    if METRICS[name] in classes:
      # ml_collections appends each repeated --config.eval.<field> flag to the tuple.
      raise ConfigError(f"config.eval.{field}: {name!r} is listed twice (a repeated "
                        f"--config.eval.{field} flag adds to the list; give the list once).")
    classes.append(METRICS[name])
  for cls in classes:
    try:
      cls.check(config)
    except ConfigError as e:
      if field == "metrics":
        raise
      # The checks name the field a metric is usually listed in; name the one the user set.
      text = str(e)
      if text.startswith("config.eval.metrics:"):
        text = text[len("config.eval.metrics:"):].lstrip()
      named = "" if text.startswith(repr(cls.name)) else f"{cls.name!r}: "
      raise ConfigError(f"config.eval.{field}: {named}{text}") from None
  return classes


def _check_eval_fields(config) -> None:
  ev = config.eval
  if not (isinstance(ev.checkpoint_step, int) and ev.checkpoint_step >= 0):
    raise ConfigError(f"config.eval.checkpoint_step: must be a non-negative integer (0: the newest "
                      f"checkpoint), got {ev.checkpoint_step!r}.")
  if not (isinstance(ev.num_checkpoints, int) and ev.num_checkpoints > 0):
    raise ConfigError(f"config.eval.num_checkpoints: must be a positive integer, got "
                      f"{ev.num_checkpoints!r}.")


class Session:
  """What evaluating checkpoints of one config needs once: model, data, evaluators, writer.

  Building it opens the data the metrics read (a missing dataset fails here, before any
  checkpoint is restored); `open_writer` comes after every check, so that a refused evaluation
  leaves the workdir as it was.
  """

  def __init__(self, config, workdir: str, metric_classes: list[type]):
    self.config, self.workdir = config, workdir
    self.model = train_state.create_model(config, steps_per_epoch=1)  # schedules play no part here
    self.abstract = summary.abstract_state(config)
    self.data = EvalData(config, self.model)
    self.evaluators = [cls(config, self.model, self.data) for cls in metric_classes]
    self.eval_dir = os.path.join(workdir, "eval")
    self.is_main = jax.process_index() == 0
    self.writer = None

  def open_writer(self) -> None:
    """The compilation cache and the TensorBoard writer of `<workdir>/eval/`."""
    compile_cache.use(self.config.train.get("compilation_cache", ""), self.workdir)
    self.writer = (summary_writer.SummaryWriter(self.eval_dir) if self.is_main
                   else summary_writer.NoOpWriter())

  def evaluate(self, state, step: int, with_figures: bool, timings: dict[str, float],
               details: dict, figures: list[str]) -> dict[str, float]:
    """Every metric on one restored checkpoint; its scalars (also written to TensorBoard at
    `step`). Adds seconds per metric to `timings` and, `with_figures`, fills `details` and
    `figures` (PNG paths)."""
    state = jax.device_put(state)  # once, not with every jitted call
    scalars = {}
    for ev in self.evaluators:
      start = time.time()
      out = ev.run(state, step, ev.key_for(eval_key(self.config.seed, step)),
                   with_figures=with_figures)
      timings[ev.name] = timings.get(ev.name, 0.0) + time.time() - start
      scalars.update(out.scalars)
      if with_figures:
        details[ev.name] = out.details
        for name, image in out.figures.items():
          path = os.path.join(self.eval_dir, f"{name}_{step:08d}.png")
          if self.is_main:
            visualization.save_png(image, path, scale=_png_scale(image))
          self.writer.write_images(step, {f"eval/{name}": image[None]})
          figures.append(path)
    self.writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
    self.writer.flush()
    return scalars

  def write_results(self, steps: list[int], per_step: dict, details: dict, figures: list[str],
                    timings: dict[str, float]) -> dict:
    """`<workdir>/eval/results_<newest step>.json` (process 0) and the console table."""
    from hebm_jax.evaluation import paper  # pylint: disable=g-import-not-at-top
    config = self.config
    mean, std = results_lib.aggregate(per_step)
    reported = paper.paper_numbers(config)
    table = results_lib.format_table(mean, std, reported, len(steps))
    results = {
        "workdir": fileio.absolute(self.workdir),
        "checkpoint_steps": steps,
        "results": mean,
        "std_over_checkpoints": std if len(steps) > 1 else {},
        "per_checkpoint": per_step,
        "paper": {k: v._asdict() for k, v in reported.items() if k in mean},
        "details": details,
        "figures": figures,
        "settings": {"seed": config.seed, "eval_batch_size": config.eval.batch_size,
                     "num_checkpoints": config.eval.num_checkpoints,
                     **{ev.name: ev.settings() for ev in self.evaluators}},
        "seconds": timings,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
    }
    if self.is_main:
      path = os.path.join(self.eval_dir, f"results_{steps[-1]:08d}.json")
      results_lib.write_json(path, results_lib.merge_with_existing(path, results))
      print(f"\nEvaluation of {self.workdir}, checkpoint step(s) {steps}:\n{table}\n"
            f"written: {path}", flush=True)
    return results


def _png_scale(image) -> int:
  return min(4, max(1, 256 // max(image.shape[:2])))  # tiny digit grids are unreadable at 1x
