"""Every command in README.md's ```bash blocks names configs, fields, flags and modules that exist.

Nothing is trained: each `python main.py ...` / `python -m module ...` command is parsed, its
`--config=` file loaded, its `--config.a.b=v` overrides applied with ml_collections' own flag
parser (so a renamed field or a value of the wrong type fails here), and every other flag looked
up among those the program defines.
"""

from __future__ import annotations

import ast
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl's own flags, accepted by every absl program.
ABSL_FLAGS = {"verbosity", "v", "logtostderr", "alsologtostderr", "log_dir", "helpfull", "help",
              "flagfile", "only_check_args"}


def readme_commands(path: str = os.path.join(ROOT, "README.md")) -> list[list[str]]:
  """The argv of each `python main.py` / `python -m` command in the file's ```bash blocks.

  Continuation lines are joined, comments dropped, and `a && b` split into separate commands.
  """
  text = open(path, encoding="utf-8").read()
  commands = []
  for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
    for line in block.replace("\\\n", " ").splitlines():
      for part in line.split("&&"):
        argv = shlex.split(part, comments=True)
        if argv[:1] == ["python"] and argv[1:2] != ["-c"] and len(argv) > 1:
          commands.append(argv[1:])
  return commands


def program_file(argv: list[str]) -> str:
  """The source file `python argv...` runs from the repository root: main.py, or the file of
  module `-m a.b` (a/b.py, or a/b/__main__.py for a package)."""
  if argv[0] != "-m":
    return os.path.join(ROOT, argv[0])
  base = os.path.join(ROOT, *argv[1].split("."))
  for path in (base + ".py", os.path.join(base, "__main__.py")):
    if os.path.isfile(path):
      return path
  raise AssertionError(f"python -m {argv[1]}: no module file {os.path.relpath(base, ROOT)}.py")


def defined_flags(path: str) -> set[str]:
  """Names of the flags a program defines: absl `DEFINE_*("name", ...)` and argparse
  `add_argument("--name", ...)` calls anywhere in its source (read, not imported: two programs'
  absl flags of the same name could not be defined in one process)."""
  names = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if not (isinstance(node, ast.Call) and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      continue
    fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    if fn.startswith("DEFINE_"):
      names.add(node.args[0].value)
    elif fn == "add_argument" and node.args[0].value.startswith("--"):
      names.add(node.args[0].value[2:])
  return names


def check_config(config_args: list[str]) -> None:
  """Loads `--config=FILE` (relative to the working directory) and applies the `--config.*`
  overrides as main.py's flag does; a missing field raises AttributeError, a bad value
  `flags.Error`, a missing file OSError."""
  values = flags.FlagValues()
  argv = ["prog"] + config_args
  # The override flags are defined from the argv given here (sys.argv by default).
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  assert values.config.keys()  # ml_collections applies the overrides at first access


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_this_test_checks():
  programs = {c[1] if c[0] == "-m" else c[0] for c in COMMANDS}
  assert {"main.py", "hebm_jax.sweep", "hebm_jax.convert",
          "hebm_jax.evaluation.inception"} <= programs, programs
  assert sum(c[0] == "main.py" for c in COMMANDS) >= 5


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:80] for c in COMMANDS])
def test_readme_command_names_existing_configs_fields_flags_and_modules(argv, monkeypatch):
  monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository root
  path = program_file(argv)
  assert os.path.isfile(path), f"{' '.join(argv)}: {path} does not exist"
  known = defined_flags(path) | ABSL_FLAGS
  args = argv[2:] if argv[0] == "-m" else argv[1:]
  config_args = []
  for arg in args:
    if not arg.startswith("--"):
      continue  # a positional argument (the inception converter's paths)
    name = arg[2:].split("=", 1)[0]
    if name == "config" or name.startswith("config."):
      config_args.append(arg)
      continue
    bare = name[2:] if name.startswith("no") and name[2:] in known else name
    assert bare in known, f"{' '.join(argv)}: --{name} is not a flag of {os.path.relpath(path, ROOT)}"
  config_files = [a.split("=", 1)[1] for a in config_args if a.startswith("--config=")]
  for config_file in config_files:
    assert os.path.isfile(os.path.join(ROOT, config_file)), f"{config_file} does not exist"
  if config_files:
    check_config(config_args)


def test_a_renamed_field_or_flag_is_caught(monkeypatch):
  monkeypatch.chdir(ROOT)
  with pytest.raises(AttributeError, match='Did you mean "num_steps"'):
    check_config(["--config=configs/digits.py", "--config.train.num_stepz=5"])
  with pytest.raises(flags.Error, match="many"):
    check_config(["--config=configs/digits.py", "--config.train.num_steps=many"])
  with pytest.raises(OSError, match="configs/digitz.py"):
    check_config(["--config=configs/digitz.py"])
  assert "workdir" in defined_flags(os.path.join(ROOT, "main.py"))
  assert "sweep" in defined_flags(program_file(["-m", "hebm_jax.sweep"]))
  assert "convert" in defined_flags(program_file(["-m", "hebm_jax.evaluation.inception"]))
