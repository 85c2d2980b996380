"""Command-line plumbing shared by `main.py` and `python -m hebm_jax.sweep`: user errors as one line.

Mistakes a user makes on the command line (a misspelt `--config.` override, a config file that
does not exist or does not import, a flag value out of its choices, a missing required flag) and
the errors the programs raise for bad config values, workdirs or data are printed as one
`error: ...` line on stderr with exit status 2, instead of absl's or ml_collections' tracebacks.
`--verbosity=1` (or higher) keeps the traceback for debugging.
"""

from __future__ import annotations

import logging as logging_std
import re
import sys
from typing import Callable, NoReturn, Sequence

from absl import flags, logging


class QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of libraries (orbax: a dozen lines per checkpoint; jax: absent TPU backends;
  TensorFlow, tfds, clu); keeps their warnings and errors."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    noisy = any(f"/{lib}/" in record.pathname
                for lib in ("orbax", "tensorflow", "tensorflow_datasets", "clu", "jax/_src"))
    return record.levelno >= logging_std.WARNING or not noisy


def quiet_libraries() -> None:
  """Installs `QuietLibraries` on absl's handler (call inside the absl main)."""
  logging.get_absl_handler().addFilter(QuietLibraries())


def fail(message: str) -> NoReturn:
  """Prints `error: message` and exits with status 2 (a usage error)."""
  logging.flush()
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


def _verbose(argv: Sequence[str]) -> bool:
  for arg in argv:
    match = re.fullmatch(r"--(?:verbosity|v)=(-?\d+)", arg)
    if match and int(match.group(1)) >= 1:
      return True
  return False


def flag_error_message(error: BaseException, argv: Sequence[str]) -> str:
  """One readable line for an exception raised while parsing `argv`."""
  text = str(error).strip().replace("\\'", "'").replace("\\n", "\n")
  cause = error.__cause__
  if isinstance(error, OSError) and cause is not None:
    error, text = cause, str(cause)
  config_arg = next((a for a in argv if a.startswith("--config=")), "--config")
  if isinstance(error, (AttributeError, KeyError)) or "Did you mean" in text:
    # ml_collections: "'num_stepz'\nDid you mean "num_steps" instead of "num_stepz"?"
    field = re.search(r"'([^']+)'", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    override = next((a.split("=", 1)[0] for a in argv
                     if field and a.startswith("--config.")
                     and field.group(1) in a.split("=", 1)[0].split(".")[1:]), None)
    where = override or "--config.<field>"
    name = field.group(1) if field else text
    return (f"{where}: the config has no field {name!r}"
            + (f"; did you mean {hint.group(1)!r}?" if hint else "."))
  if isinstance(error, (FileNotFoundError, IsADirectoryError)) or "No such file" in text:
    return f"{config_arg}: no such config file."
  if isinstance(error, SyntaxError):
    return f"{config_arg}: the config file does not parse: {error.msg} (line {error.lineno})."
  if isinstance(error, flags.Error):
    text = re.sub(r"^flag (--\S+): ", r"\1: ", text)
    return text.replace("Flag --workdir must have a value other than None.", "is required.")
  return f"{config_arg}: {type(error).__name__}: {text.splitlines()[0] if text else ''}"


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with errors reported by `fail` (for `app.run(..., flags_parser=)`)."""
  try:
    remaining = flags.FLAGS(argv)
    # ml_collections loads the config file and applies the overrides lazily, at first access:
    # do it here, so that their errors are flag errors too.
    if "config" in flags.FLAGS:
      _ = flags.FLAGS.config.keys()
    return remaining
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if _verbose(argv):
      raise
    fail(flag_error_message(e, argv))


def run_reporting_user_errors(fn: Callable[[], None], user_errors: tuple[type, ...]) -> None:
  """Runs `fn`, the body of a command-line program, and turns its expected endings into exits.

  * An exception of a `user_errors` type: one `error:` line, exit status 2.
  * A training or an evaluation follower stopped by SIGTERM/SIGINT after saving
    (`preemption.Interrupted`): its message as a warning and exit status 128 + the signal (143,
    or 130 after Ctrl-C). Not 0, so that a scheduler or script sees a job to resume, not a
    finished one.
  * Divergence, or a checkpoint that could not be saved: one `error:` line, exit status 1.
  """
  from hebm_jax import checkpointing, divergence, preemption  # pylint: disable=g-import-not-at-top
  try:
    fn()
  except preemption.Interrupted as e:
    logging.warning("%s", e)
    logging.flush()
    sys.exit(e.exit_code)
  except (divergence.DivergenceError, checkpointing.CheckpointSaveError) as e:
    logging.flush()
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  except user_errors as e:
    if _verbose(sys.argv):
      raise
    fail(str(e))
