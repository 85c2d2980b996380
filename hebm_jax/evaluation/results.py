"""The results of `--mode=eval`: aggregation over checkpoints, the console table, the JSON file."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import numpy as np

from hebm_jax import fileio
from hebm_jax.evaluation.paper import Reported


def aggregate(per_step: dict[int, dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
  """Mean and standard deviation (population, as numpy) of each result over checkpoints.

  A result equal at every checkpoint has std 0 even when it is not finite (the Gaussian prior's
  `prior_kl/ess` is inf at every step); other non-finite spreads are NaN, without a numpy warning.
  """
  names = list(dict.fromkeys(k for v in per_step.values() for k in v))  # metric order kept
  mean, std = {}, {}
  for name in names:
    values = np.asarray([v[name] for v in per_step.values() if name in v], dtype=np.float64)
    with np.errstate(invalid="ignore"):
      mean[name] = float(np.mean(values))
      std[name] = 0.0 if np.all(values == values[0]) else float(np.std(values))
  return mean, std


def _fmt(value: float | None, std: float | None = None) -> str:
  if value is None:
    return "-"
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  text = f"{value:.4f}"
  return text + (f" ± {std:.4f}" if std is not None else "")


def format_table(mean: dict[str, float], std: dict[str, float], paper: dict[str, Reported],
                 num_checkpoints: int) -> str:
  """One row per result: ours (± std over checkpoints when there are several), the paper's number."""
  rows = [("result", "ours" + (f" (mean ± std, {num_checkpoints} ckpts)" if num_checkpoints > 1 else ""),
           "paper", "paper source")]
  for name, value in mean.items():
    ref = paper.get(name)
    rows.append((name, _fmt(value, std.get(name) if num_checkpoints > 1 else None),
                 _fmt(ref.value, ref.std) if ref else "-", ref.source if ref else ""))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def write_json(path: str, results: dict) -> None:
  """Writes `results` as indented JSON, atomically (a half-written file never replaces a good one)."""
  fileio.write_text(path, json.dumps(_jsonable(results), indent=2, sort_keys=False) + "\n")


# Entries that hold one value per metric (merged metric by metric); the rest describe the run.
_PER_METRIC = ("results", "std_over_checkpoints", "paper", "details", "seconds")


def merge_with_existing(path: str, results: dict) -> dict:
  """`results`, plus the metrics an earlier evaluation of the same checkpoints wrote to `path`.

  Evaluating other metrics of a step must not lose the numbers already there: metrics present
  in both take the new values, the others are kept. Whatever the new file would lose is set aside
  first, by renaming the old file `<path>.<UTC time>.json`: a file for other checkpoints (another
  eval.num_checkpoints), which is then not merged, and a file whose numbers or settings of a
  metric this evaluation changes (another `eval.classifier.input`, say). Re-running an evaluation
  with the same settings and results renames nothing.
  """
  if not fileio.exists(path):
    return results
  try:
    old = json.loads(fileio.read_text(path))
  except (OSError, ValueError):
    old = None
  if not old or old.get("checkpoint_steps") != list(results["checkpoint_steps"]):
    _set_aside(path)
    return results
  if _overwrites(old, results):
    _set_aside(path)
  merged = dict(results)
  for key in _PER_METRIC:
    merged[key] = {**old.get(key, {}), **results.get(key, {})}
  merged["per_checkpoint"] = {
      step: {**old.get("per_checkpoint", {}).get(str(step), {}), **values}
      for step, values in results["per_checkpoint"].items()}
  merged["settings"] = {**old.get("settings", {}), **results["settings"]}
  merged["figures"] = sorted(set(old.get("figures", [])) | set(results["figures"]))
  return merged


def _overwrites(old: dict, new: dict) -> bool:
  """Whether merging `new` into `old` changes a number or a setting `old` holds (as JSON)."""
  new = json.loads(json.dumps(_jsonable(new)))  # inf as "inf", int keys as strings: as `old` reads
  for key in ("results", "settings"):
    before, after = old.get(key, {}), new.get(key, {})
    if any(before[name] != after[name] for name in before.keys() & after.keys()):
      return True
  return False


def _set_aside(path: str) -> None:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
  fileio.rename(path, f"{path[:-len('.json')]}.{stamp}.json")
