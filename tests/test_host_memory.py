"""The entry points' re-execution with glibc's huge-page malloc tunable."""

import os
import subprocess
import sys
import textwrap

import pytest

from hebm_jax import host_memory

LINUX = dict(system="Linux", libc="glibc")


def test_adds_the_tunable_and_keeps_the_others():
  env = host_memory.hugepage_environment({"PATH": "/bin"}, **LINUX)
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = host_memory.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **LINUX)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ,system,libc", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "Linux", "glibc"),   # the user's own choice
    ({"GLIBC_TUNABLES": "a=1:glibc.malloc.hugetlb=1"}, "Linux", "glibc"),  # already re-executed
    ({"HEBM_JAX_HUGEPAGES": "0"}, "Linux", "glibc"),                      # opted out
    ({}, "Darwin", ""),
    ({}, "Linux", "musl"),
])
def test_leaves_the_environment_alone(environ, system, libc):
  assert host_memory.hugepage_environment(environ, system, libc) is None


@pytest.mark.skipif(host_memory.hugepage_environment({}) is None, reason="not Linux with glibc")
def test_reexecutes_once_with_the_same_command_line(tmp_path):
  script = tmp_path / "entry.py"
  script.write_text(textwrap.dedent("""
      import os, sys
      print("start", os.getpid(), flush=True)
      from hebm_jax import host_memory
      host_memory.reexec_with_hugepages()
      print("args", sys.argv[1:], os.environ.get("GLIBC_TUNABLES"), os.getpid())
  """))
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HEBM_JAX_HUGEPAGES")}
  env["PYTHONPATH"] = os.getcwd()
  out = subprocess.run([sys.executable, str(script), "--flag=1", "x"], env=env, check=True,
                       capture_output=True, text=True).stdout.splitlines()
  starts = [line for line in out if line.startswith("start")]
  assert len(starts) == 2 and len(set(starts)) == 1          # the same process, started twice
  pid = starts[0].split()[1]
  assert out[-1] == f"args ['--flag=1', 'x'] glibc.malloc.hugetlb=1 {pid}"
