"""A workdir's checkpoints for evaluation and sampling: which steps, checks, restoring (read-only)."""

from __future__ import annotations

from etils import epath

from hebm_jax import checkpointing

# Fields of config.data that change which examples the model was trained on; they must match the
# checkpoint's. `anomaly_protocol` is not one: both protocols train on the same images (MEG's first
# draw) and differ only in the test set, so a run trained under 'meg' may be scored on the
# 'disjoint' test set, which measures how much of its AUPRC comes from test images it trained on.
# The protocol used is recorded with the anomaly metric's settings.
_DATA_FIELDS = ("name", "classes", "held_out_digit", "image_size", "channels")


class EvaluationError(ValueError):
  """The workdir cannot be evaluated as configured (no checkpoint, unknown step, wrong data)."""


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the finished checkpoints in `workdir/checkpoints` (sorted; [] when none). Reads only."""
  directory = epath.Path(checkpointing.checkpoint_dir(workdir))
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def select_steps(workdir: str, checkpoint_step: int = 0, num_checkpoints: int = 1,
                 field: str = "config.eval.checkpoint_step") -> list[int]:
  """The checkpoints to use: the newest `num_checkpoints` up to `checkpoint_step` (0: the newest).

  Raises:
    EvaluationError: no checkpoint in the workdir, or `checkpoint_step` is not one of them.
  """
  steps = checkpoint_steps(workdir)
  where = checkpointing.checkpoint_dir(workdir)
  if not steps:
    raise EvaluationError(f"--workdir={workdir} holds no checkpoint (looked in {where}); train "
                          "first with --mode=train, or point --workdir at a trained run.")
  wanted = checkpoint_step
  if wanted:
    if wanted not in steps:
      raise EvaluationError(f"{field}={wanted}: no such checkpoint in {where}; "
                            f"it holds steps {steps}.")
    steps = [s for s in steps if s <= wanted]
  return steps[-num_checkpoints:]


def check_data_matches(saved: dict, config) -> None:
  """Raises `EvaluationError` if the checkpoint was trained on other data than the config names."""
  diffs = []
  wanted = checkpointing.config_to_dict(config)["data"]
  for field in _DATA_FIELDS:
    a = saved.get("data", {}).get(field)
    b = wanted.get(field)
    if field == "held_out_digit" and config.data.name != "mnist_anomaly":
      continue
    if a is not None and a != b:
      diffs.append(f"data.{field}: checkpoint {a!r} vs config {b!r} "
                   f"(pass --config.data.{field}={_flag_value(a)})")
  if diffs:
    raise EvaluationError("The checkpoints were trained on other data than the config describes:\n  "
                          + "\n  ".join(diffs))


def _flag_value(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def restore_config_checked(workdir: str, steps: list[int], config):
  """A read-only manager over the workdir's checkpoints, after checking that the newest of
  `steps` was written for this config's model and data.

  Raises:
    checkpointing.IncompatibleCheckpointError: another architecture.
    EvaluationError: other data.
  """
  manager = checkpointing.make_manager(workdir, max(len(checkpoint_steps(workdir)), 1), create=False)
  saved = checkpointing.saved_config(manager, steps[-1])
  diffs = checkpointing.architecture_differences(saved, config)
  if diffs:
    manager.close()
    raise checkpointing.IncompatibleCheckpointError(
        f"The checkpoints in {workdir} were written for a different model:\n  " + "\n  ".join(diffs))
  try:
    check_data_matches(saved, config)
  except EvaluationError:
    manager.close()
    raise
  return manager
