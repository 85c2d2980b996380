"""Divergence guards of the training loop: which step went wrong, and why.

Metrics of the steps since the last check are fetched together (one device-to-host transfer per
log interval) and checked step by step: non-finite values, and the bounds of `config.train`
(the EBM loss, the mean energies on posterior and prior samples, gradient, parameter and update
norms). A runaway EBM can keep its contrastive loss small while f itself explodes, so the
energies are bounded directly.

After a divergence with `train.on_divergence='restore'` the loop goes back to the last good
checkpoint; the run state (`load_run_state`) counts those restores, and `scaled_learning_rates`
lowers the learning rates by `train.restore_lr_factor` per restore.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from hebm_jax import fileio


class DivergenceError(FloatingPointError):
  """Training produced non-finite values or values beyond the configured bounds.

  Attributes:
    first_bad_step: the first step that failed a check.
  """

  def __init__(self, message: str, first_bad_step: int):
    super().__init__(message)
    self.first_bad_step = first_bad_step


_NORM_PREFIXES = ("grad_norm/", "param_norm/", "update_norm/")


@dataclasses.dataclass
class Guard:
  """Checks per-step metrics against `config.train`'s bounds (0 disables a bound).

  Steps whose update was dropped by `train.on_divergence='skip'` (metric 'skipped' = 1) are not
  checked; they are counted, and more than `max_consecutive_skips` in a row is a divergence.
  """
  max_abs_ebm_loss: float = 0.0
  max_abs_energy: float = 0.0
  max_norm: float = 0.0
  max_consecutive_skips: int = 10
  consecutive_skips: int = 0
  total_skips: int = 0

  @classmethod
  def from_config(cls, train_config) -> "Guard":
    t = train_config
    return cls(max_abs_ebm_loss=t.max_abs_ebm_loss, max_abs_energy=t.get("max_abs_energy", 0.0),
               max_norm=t.get("max_norm", 0.0),
               max_consecutive_skips=t.get("max_consecutive_skips", 10))

  def problems(self, m: dict) -> list[str]:
    """What is wrong with one step's (host) metrics; [] when nothing is."""
    bad = [f"{k} = {v}" for k, v in m.items() if not np.isfinite(v)]
    if self.max_abs_ebm_loss and abs(m.get("ebm_loss", 0.0)) > self.max_abs_ebm_loss:
      bad.append(f"|ebm_loss| = {abs(m['ebm_loss']):.3g} > train.max_abs_ebm_loss")
    for k in ("f_posterior", "f_prior"):
      if self.max_abs_energy and abs(m.get(k, 0.0)) > self.max_abs_energy:
        bad.append(f"|{k}| = {abs(m[k]):.3g} > train.max_abs_energy")
    for k, v in m.items():
      if self.max_norm and k.startswith(_NORM_PREFIXES) and v > self.max_norm:
        bad.append(f"{k} = {v:.3g} > train.max_norm")
    return bad

  def check(self, pending: list[tuple[int, dict]]) -> tuple[list[dict], int]:
    """Checks the pending steps' metrics (fetched to the host) in step order.

    Args:
      pending: [(step, metrics dict of device scalars), ...] in step order; an entry of a call
        that ran S steps (`train.steps_per_dispatch`) holds (S,) arrays and its last step.

    Returns:
      (host metrics of the steps whose update was applied, number of dropped updates).

    Raises:
      DivergenceError: naming the step range, the first bad step and what was wrong.
    """
    if not pending:
      return [], 0
    steps, host = _per_step([s for s, _ in pending], jax.device_get([m for _, m in pending]))
    kept, skipped = [], 0
    for step, m in zip(steps, host):
      m = {k: float(v) for k, v in m.items()}
      if m.pop("skipped", 0.0) > 0:
        skipped += 1
        self.consecutive_skips += 1
        self.total_skips += 1
        if self.consecutive_skips > self.max_consecutive_skips:
          raise DivergenceError(
              f"Training diverged: {self.consecutive_skips} non-finite updates in a row up to "
              f"step {step} (train.max_consecutive_skips={self.max_consecutive_skips}). "
              "No checkpoint was written from these steps.", step)
        continue
      self.consecutive_skips = 0
      bad = self.problems(m)
      if bad:
        raise DivergenceError(
            f"Training diverged in steps {steps[0]}-{steps[-1]} (first bad step {step}): "
            f"{', '.join(bad)}. No checkpoint was written from these steps.", step)
      kept.append(m)
    return kept, skipped


def _per_step(steps: list[int], metrics: list[dict]) -> tuple[list[int], list[dict]]:
  """Splits entries of (S,) metric arrays (S steps ending at `step`) into S per-step entries."""
  out_steps, out = [], []
  for step, m in zip(steps, metrics):
    first = next(iter(m.values()), None)
    n = int(np.size(first)) if np.ndim(first) else 0  # 0: one step's scalars
    if not n:
      out_steps.append(step)
      out.append(m)
      continue
    for i in range(n):
      out_steps.append(step - n + 1 + i)
      out.append({k: v[i] for k, v in m.items()})
  return out_steps, out


def summarize(kept: list[dict], skipped: int) -> dict:
  """Means of the checked steps' metrics, plus 'skipped': the updates dropped among them."""
  summary = {k: float(np.mean([m[k] for m in kept])) for k in kept[0]} if kept else {}
  summary["skipped"] = float(skipped)
  return summary


def _run_state_path(workdir: str) -> str:
  return os.path.join(workdir, "run_state.json")


def load_run_state(workdir: str) -> dict:
  """{'restores': n}: how often `train.on_divergence='restore'` reloaded a checkpoint in this run.

  Kept beside the checkpoints so that a resumed run uses the same randomness and learning rates
  as the run it continues.
  """
  path = _run_state_path(workdir)
  if not fileio.exists(path):
    return {"restores": 0}
  return {"restores": 0, **json.loads(fileio.read_text(path))}


def save_run_state(workdir: str, run_state: dict) -> None:
  """Writes `run_state` (process 0 only; see `load_run_state`)."""
  if jax.process_index() != 0:
    return
  fileio.write_text(_run_state_path(workdir), json.dumps(run_state))


def scaled_learning_rates(config, factor: float):
  """`config` with every learning rate multiplied by `factor` (after divergence restores)."""
  if factor == 1.0:
    return config
  config = config.copy_and_resolve_references()
  for name in ("lr_generator", "lr_encoder", "lr_prior"):
    config.optim[name] = config.optim[name] * factor
  return config
