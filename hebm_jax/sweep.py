"""Ablation sweeps: train and evaluate a grid of config overrides, one sub-workdir each, one table.

    python -m hebm_jax.sweep --config=configs/mnist.py --workdir=runs/sweep_k \\
        --sweep=sampler.n_steps=15,30,60 --config.train.num_steps=2000 \\
        --config.eval.metrics=mse,log_likelihood

Each `--sweep=field=v1,v2,...` adds an axis (the grid is their product; values are parsed as the
field's type; a tuple value is written in parentheses, e.g. `model.z_dims=(2,2,2),(4,4,4)`). Run
`field=value[,field=value]` trains in `<workdir>/<field>=<value>...` (resuming what is there, so
an interrupted sweep continues), then runs `--mode=eval` there. Every override, field name and
metric is checked before the first run starts. Prints one table (a row per run, a column per
result) and writes it to `<workdir>/sweep_results.json`. A run whose training diverges (the
`train.on_divergence` guards) is marked 'diverged' in the table, gets no results, and the sweep
goes on with the next run. Paper Table 4 is
`--sweep=sampler.n_steps=15,30,60,150,300`; Table 5 `--sweep=prior.width=10,20,50,100`.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Parent directory of the runs' work directories.")
flags.DEFINE_multi_string("sweep", [], "field=v1,v2,...: one axis of the grid (repeatable).")
flags.DEFINE_bool("train", True, "Train each run first (resuming); --notrain only evaluates.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class SweepError(ValueError):
  """A --sweep flag names an unknown field or a value of the wrong type."""


def split_values(text: str) -> list[str]:
  """'15,30,(2,2),x' -> ['15', '30', '(2,2)', 'x']: commas inside brackets do not split."""
  out, depth, current = [], 0, ""
  for ch in text:
    depth += ch in "([" and 1 or 0
    depth -= ch in ")]" and 1 or 0
    if ch == "," and depth == 0:
      out.append(current.strip())
      current = ""
    else:
      current += ch
  out.append(current.strip())
  return [v for v in out if v]


def _fields(config, prefix: str = "") -> list[str]:
  names = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    names += _fields(value, path + ".") if hasattr(value, "items") else [path]
  return names


def _parse(field: str, text: str, current):
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise SweepError(f"--sweep {field}: cannot read {text!r} as a {type(current).__name__}.") from None
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(current, bool):
    ok = isinstance(value, bool)
  elif isinstance(current, int):
    ok = is_number and isinstance(value, int)
  elif isinstance(current, float):
    ok = is_number
  elif isinstance(current, (tuple, list)):
    ok = isinstance(value, (tuple, list))
  else:
    ok = True
  if not ok:
    raise SweepError(f"--sweep {field}: {text!r} is a {type(value).__name__}; the field holds a "
                     f"{type(current).__name__} ({current!r}).")
  if isinstance(current, float):
    value = float(value)
  return tuple(value) if isinstance(current, tuple) else value


def parse_sweeps(config, specs: list[str]) -> list[tuple[str, list]]:
  """[(field, [values...]), ...] from the --sweep flags, checked against `config`.

  Raises:
    SweepError: a malformed flag, an unknown field (with the closest known one), a bad value.
  """
  known = _fields(config)
  axes = []
  for spec in specs:
    if "=" not in spec:
      raise SweepError(f"--sweep={spec}: expected field=v1,v2,... (e.g. sampler.n_steps=15,30,60).")
    field, text = spec.split("=", 1)
    field = field.strip()
    if field not in known:
      close = difflib.get_close_matches(field, known, n=1)
      raise SweepError(f"--sweep={spec}: the config has no field {field!r}."
                       + (f" Did you mean {close[0]!r}?" if close else ""))
    if field in [a for a, _ in axes]:
      raise SweepError(f"--sweep: {field!r} is swept twice.")
    current = config
    for part in field.split("."):
      current = current[part]
    values = [_parse(field, v, current) for v in split_values(text)]
    if not values:
      raise SweepError(f"--sweep={spec}: no values.")
    axes.append((field, values))
  if not axes:
    raise SweepError("no --sweep=field=v1,v2,... given.")
  return axes


def _format(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def grid(config, axes: list[tuple[str, list]]) -> list[tuple[str, object]]:
  """[(run name, config), ...] for the product of the axes (names like 'sampler.n_steps=15')."""
  runs = []
  for combo in itertools.product(*[values for _, values in axes]):
    run = config.copy_and_resolve_references()
    for (field, _), value in zip(axes, combo):
      *path, last = field.split(".")
      node = run
      for part in path:
        node = node[part]
      node[last] = value
    name = "+".join(f"{field}={_format(v)}" for (field, _), v in zip(axes, combo))
    runs.append((name, run))
  return runs


def format_table(rows: list[dict], fields: list[str]) -> str:
  """A row per run: the swept values, a status column when a run diverged, then every result
  (4 decimals; '-' where a run has none)."""
  results = list(dict.fromkeys(k for r in rows for k in r["results"]))
  statuses = any(r.get("status", "ok") != "ok" for r in rows)
  header = fields + (["status"] if statuses else []) + results
  table = [header] + [[_format(r["values"][f]) for f in fields]
                      + ([r.get("status", "ok").split(":")[0]] if statuses else [])
                      + [f"{r['results'][k]:.4f}" if k in r["results"] else "-" for k in results]
                      for r in rows]
  widths = [max(len(row[i]) for row in table) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def run_sweep(config, workdir: str, specs: list[str], train: bool = True) -> list[dict]:
  """Trains (unless `train` is False) and evaluates every run of the grid; returns the rows."""
  from hebm_jax import divergence  # pylint: disable=g-import-not-at-top
  from hebm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from hebm_jax.config_validation import validate_config  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation import driver, results  # pylint: disable=g-import-not-at-top

  axes = parse_sweeps(config, specs)
  runs = grid(config, axes)
  for name, run in runs:  # every run's config is checked before the first one starts
    try:
      validate_config(run)
      driver.resolve_metrics(run)
    except ValueError as e:
      raise SweepError(f"run {name}: {e}") from None
  rows = []
  for i, (name, run) in enumerate(runs):
    run_dir = os.path.join(workdir, name)
    logging.info("Sweep run %d/%d: %s -> %s", i + 1, len(runs), name, run_dir)
    values = {}
    for field, _ in axes:
      node = run
      for part in field.split("."):
        node = node[part]
      values[field] = node
    if train:
      try:
        train_lib.train_and_evaluate(run, run_dir)
      except divergence.DivergenceError as e:
        # A grid explores settings some of which diverge (a large EBM learning rate, no spectral
        # norm): that is a result of the sweep, not a reason to lose the runs after it.
        logging.warning("Sweep run %s diverged; it gets no results: %s", name, e)
        rows.append({"run": name, "workdir": run_dir, "values": values, "results": {},
                     "checkpoint_steps": [], "status": f"diverged: {e}"})
        continue
    out = driver.run_evaluation(run, run_dir)
    rows.append({"run": name, "workdir": run_dir, "values": values, "results": out["results"],
                 "checkpoint_steps": out["checkpoint_steps"], "status": "ok"})
  table = format_table(rows, [f for f, _ in axes])
  results.write_json(os.path.join(workdir, "sweep_results.json"),
                     {"axes": {f: v for f, v in axes}, "runs": rows})
  print(f"\nSweep over {', '.join(f for f, _ in axes)} ({len(rows)} runs):\n{table}", flush=True)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from hebm_jax import checkpointing, cli, workdir_lock  # pylint: disable=g-import-not-at-top
  from hebm_jax.evaluation.driver import EvaluationError  # pylint: disable=g-import-not-at-top
  cli.quiet_libraries()
  cli.run_reporting_user_errors(
      lambda: run_sweep(FLAGS.config, FLAGS.workdir, FLAGS.sweep, FLAGS.train),
      (SweepError, EvaluationError, checkpointing.IncompatibleCheckpointError, FileNotFoundError,
       workdir_lock.WorkdirLockError))


if __name__ == "__main__":
  from hebm_jax import cli as _cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=_cli.parse_flags)
