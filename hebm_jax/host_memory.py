"""Transparent huge pages for the host buffers XLA:CPU allocates on every call.

An XLA:CPU program allocates its temporary buffers (126 MB for the `svhn` train step) afresh on
each call, and glibc serves allocations that large with a new `mmap`, so every step touched that
memory for the first time: 32,000 page faults and about 60 ms of kernel time per 200 ms `svhn`
step on a 2-core machine. With the glibc tunable `glibc.malloc.hugetlb=1` malloc asks the kernel
for transparent huge pages (`madvise(MADV_HUGEPAGE)`), which cuts the faults to a few hundred
(BENCHMARKS.md). A tunable is read once, when the process starts, so the entry points
(`main.py`, `benchmarks.run`) re-execute themselves with it set; importing the library changes
nothing. `HEBM_JAX_HUGEPAGES=0` turns this off.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "HEBM_JAX_HUGEPAGES"


def hugepage_environment(environ: Mapping[str, str], system: str | None = None,
                         libc: str | None = None) -> dict[str, str] | None:
  """The environment to re-execute with, or None when there is nothing to change.

  Args:
    environ: the current environment.
    system: `platform.system()`; default: this machine's.
    libc: `platform.libc_ver()[0]`; default: this machine's.

  Returns:
    `environ` with `glibc.malloc.hugetlb=1` appended to `GLIBC_TUNABLES` (other tunables kept);
    None off Linux/glibc, when `HEBM_JAX_HUGEPAGES=0`, or when the tunable is already set (to any
    value, so that a user's own choice wins and a re-executed process does not loop).
  """
  system = platform.system() if system is None else system
  libc = platform.libc_ver()[0] if libc is None else libc
  if system != "Linux" or libc != "glibc" or environ.get(OPT_OUT, "1") == "0":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if any(t.split("=")[0] == TUNABLE for t in tunables.split(":")):
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"
  return env


def reexec_with_hugepages() -> None:
  """Replaces this process by the same command line with `hugepage_environment`, if it differs.

  Call it first thing in an entry point, before any device work: `os.execve` keeps the process id
  and the command line (`sys.orig_argv`, so `python -m ...` works) but nothing in memory.
  """
  env = hugepage_environment(os.environ)
  if env is None or not sys.executable:  # embedded interpreters cannot be re-executed
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
