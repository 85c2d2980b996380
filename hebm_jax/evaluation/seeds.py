"""Results across seeds: each arm's mean ± std, and the paired difference between two priors.

One MNIST run per setting cannot carry the paper's claims: two seeds of one recipe differ by up to
24 points of top-layer accuracy (RESULTS.md). This module reads the run directories that
`scripts/mnist_tables.sh` writes (`table1_<prior>_s<seed>`, `anomaly<digit>_<prior>_s<seed>`), each
with its `eval/results_<step>.json` (local or a gs:// URL, through `hebm_jax.fileio`), and
summarises them per arm and per seed pair. An anomaly run's arm includes how it was scored (the
test split's protocol and the score variant, from the results' settings), so that a run scored on
MEG's split is never averaged with, or paired against, one scored on the disjoint test set:

    python -m hebm_jax.evaluation.seeds OUT
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Sequence

import numpy as np
from etils import epath
from scipy import stats

from hebm_jax import fileio

_RUN = re.compile(r"^(?P<table>table1|anomaly(?P<digit>\d))_(?P<prior>[a-z]+)_s(?P<seed>\d+)$")
_RESULTS = re.compile(r"^results_(?P<step>\d+)\.json$")  # not the time-stamped files set aside


@dataclasses.dataclass(frozen=True)
class Run:
  """One evaluated run: its arm (table, digit, prior), seed and newest results."""
  name: str
  table: str             # 'table1' or 'anomaly'
  digit: int | None      # the held-out digit of an anomaly run
  prior: str             # 'ebm' or 'gaussian'
  seed: int
  steps: tuple[int, ...]  # the checkpoints the results average over
  results: dict[str, float]
  std: dict[str, float]   # each result's std over those checkpoints (empty for one)
  scoring: str = ""       # an anomaly run's protocol and score variant ('meg split, w=1,z=mean')

  @property
  def arm(self) -> tuple[str, int | None, str, str]:
    return self.table, self.digit, self.scoring, self.prior


def _scoring(record: dict) -> str:
  """'<protocol> split, <score variant>' from an anomaly evaluation's settings ('' if absent)."""
  anomaly = record.get("settings", {}).get("anomaly", {})
  parts = [f"{anomaly['protocol']} split" if "protocol" in anomaly else "",
           anomaly.get("score_variant", "")]
  return ", ".join(p for p in parts if p)


def load_runs(out: str) -> list[Run]:
  """The runs under `out` that have an evaluation, sorted by name; others are skipped."""
  runs = []
  for path in sorted(epath.Path(out).iterdir(), key=lambda p: p.name):
    match = _RUN.match(path.name)
    if not match or not (path / "eval").is_dir():
      continue
    files = sorted(f.name for f in (path / "eval").iterdir() if _RESULTS.match(f.name))
    if not files:
      continue
    record = json.loads(fileio.read_text(str(path / "eval" / files[-1])))
    digit = match["digit"]
    runs.append(Run(
        name=path.name, table="anomaly" if digit else "table1",
        digit=int(digit) if digit else None, prior=match["prior"], seed=int(match["seed"]),
        steps=tuple(record["checkpoint_steps"]),
        results={k: float(v) for k, v in record["results"].items()},
        std={k: float(v) for k, v in record.get("std_over_checkpoints", {}).items()},
        scoring=_scoring(record) if digit else ""))
  return runs


@dataclasses.dataclass(frozen=True)
class Spread:
  """Mean, sample standard deviation (ddof 1) and a two-sided 95 % t interval of n values."""
  n: int
  mean: float
  std: float
  low: float
  high: float

  def format(self, scale: float = 1.0, digits: int = 2) -> str:
    if self.n < 2:
      return f"{scale * self.mean:.{digits}f} (n={self.n})"
    return (f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f} "
            f"[{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}] (n={self.n})")


def spread(values: Sequence[float]) -> Spread:
  """Mean ± std of `values` (n,), with the 95 % Student-t interval of the mean (NaN for n < 2)."""
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("spread of no values")
  mean = float(np.mean(x))
  if x.size < 2:
    return Spread(1, mean, math.nan, math.nan, math.nan)
  std = float(np.std(x, ddof=1))
  half = float(stats.t.ppf(0.975, x.size - 1)) * std / math.sqrt(x.size)
  return Spread(int(x.size), mean, std, mean - half, mean + half)


def by_arm(runs: Sequence[Run], metric: str) -> dict[tuple, Spread]:
  """`metric` over the seeds of each arm (table, digit, scoring, prior) that reports it."""
  groups: dict[tuple, list[float]] = {}
  for run in runs:
    if metric in run.results:
      groups.setdefault(run.arm, []).append(run.results[metric])
  return {arm: spread(values) for arm, values in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def paired(runs: Sequence[Run], metric: str, table: str, digit: int | None = None,
           a: str = "ebm", b: str = "gaussian",
           scoring: str = "") -> tuple[list[int], Spread] | None:
  """`metric` of prior `a` minus prior `b`, seed by seed, over the seeds both have; None if none.

  Only runs of the same `scoring` (an anomaly run's protocol and score variant) are paired.
  """
  values = {(r.prior, r.seed): r.results[metric] for r in runs
            if r.table == table and r.digit == digit and r.scoring == scoring
            and metric in r.results}
  seeds = sorted({s for p, s in values if p == a} & {s for p, s in values if p == b})
  if not seeds:
    return None
  return seeds, spread([values[(a, s)] - values[(b, s)] for s in seeds])


def report(runs: Sequence[Run]) -> str:
  """The per-run lines, each arm's spread over seeds and the EBM-minus-VLAE pairs, as text."""
  lines = ["runs (newest evaluation of each):"]
  for run in runs:
    res = run.results
    if run.table == "anomaly":
      std = run.std.get("anomaly/auprc")
      text = (f"AUPRC {res.get('anomaly/auprc', math.nan):.3f}"
              + (f" ± {std:.3f}" if std is not None else "")
              + f" (steps {run.steps[0]}-{run.steps[-1]}"
              + (f"; {run.scoring})" if run.scoring else ")"))
    else:
      test = " / ".join(f"{100 * res[f'latent_classifier/z{i}']:.2f}" for i in (1, 2, 3)
                        if f"latent_classifier/z{i}" in res)
      val = res.get("latent_classifier_val/z3")
      text = (f"z1/z2/z3 test {test} %" + (f", val z3 {100 * val:.2f} %" if val is not None else "")
              + f" (step {run.steps[-1]}), prior KL {res.get('prior_kl', math.nan):.3f}")
    lines.append(f"  {run.name:28s} {text}")
  metrics = [("latent_classifier_val/z3", 100, 2, "Table 1 val z3 %"),  # (name, scale, digits, label)
             ("latent_classifier/z3", 100, 2, "Table 1 test z3 %"),
             ("latent_classifier/z2", 100, 2, "Table 1 test z2 %"),
             ("latent_classifier/z1", 100, 2, "Table 1 test z1 %"),
             ("anomaly/auprc", 1, 3, "Table 3 AUPRC")]
  def where(digit: int | None, scoring: str) -> list[str]:
    return ([f"digit {digit}"] if digit is not None else []) + ([scoring] if scoring else [])

  arms, pairs = [], []  # (label, arm or where, value text)
  for metric, scale, digits, label in metrics:
    for (table, digit, scoring, prior), s in by_arm(runs, metric).items():
      arms.append((label, ", ".join([prior, *where(digit, scoring)]), s.format(scale, digits)))
    table = "anomaly" if metric.startswith("anomaly") else "table1"
    for digit, scoring in sorted({(r.digit, r.scoring) for r in runs if r.table == table},
                                 key=str):
      pair = paired(runs, metric, table, digit, scoring=scoring)
      if pair:
        seeds, s = pair
        pairs.append((label, ", ".join(where(digit, scoring)),
                      f"{s.format(scale, digits)} seeds {','.join(map(str, seeds))}"))
  width = max([18] + [len(row[1]) for row in arms + pairs])
  lines.append("mean ± std over seeds [95 % t interval of the mean]:")
  lines += [f"  {label:18s} {arm:{width}s} {value}" for label, arm, value in arms]
  lines.append("ebm minus gaussian, paired by seed:")
  lines += [f"  {label:18s} {arm:{width}s} {value}" for label, arm, value in pairs]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
  if len(argv) != 2 or not fileio.is_dir(argv[1]):
    print("usage: python -m hebm_jax.evaluation.seeds OUT  (a directory of scripts/mnist_tables.sh "
          "runs)", file=sys.stderr)
    return 2
  runs = load_runs(argv[1])
  if not runs:
    print(f"error: no evaluated table1_*/anomaly*_ runs under {argv[1]}", file=sys.stderr)
    return 2
  print(report(runs))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
