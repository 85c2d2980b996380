"""XLA compiler options a config selects for its programs, applied to each compile.

The options travel with each compilation (`Lowered.compile(compiler_options=...)`) instead of the
process-wide `XLA_FLAGS`: importing the library changes nothing, one process can hold programs
compiled both ways (the benchmark suite does), and a value cannot be lost because the backend was
initialised before it was set.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
from absl import logging

# XLA:CPU hands convolutions, dots and elementwise fusions to YNNPACK by default. An empty list of
# fusion types keeps them on its older Eigen kernels, which measured 1.2-1.3x faster for the
# small-channel (<= 64) SVHN-HS networks and 1.2-1.7x slower for the wide SVHN-FID ones (BENCHMARKS.md).
YNNPACK_OFF: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def for_config(train_config: Any, backend: str | None = None) -> dict[str, str]:
  """The compiler options `config.train` asks for on `backend` (default: JAX's default backend).

  `train.xla_cpu_ynnpack=False` gives `YNNPACK_OFF` on the CPU backend; other backends get no
  options (the option names an XLA:CPU pass).
  """
  backend = backend or jax.default_backend()
  if backend == "cpu" and not train_config.get("xla_cpu_ynnpack", True):
    return dict(YNNPACK_OFF)
  return {}


def _signature(args: tuple) -> tuple:
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((getattr(x, "shape", None), getattr(x, "dtype", type(x)),
                         getattr(x, "sharding", None)) for x in leaves)


def compile_with(fn: Callable, options: Mapping[str, str] | None) -> Callable:
  """`fn` (a `jax.jit` or `jax.pmap` function) compiled with `options` at its first call.

  Each new signature of argument shapes, dtypes and shardings is lowered and compiled once, as
  `fn` itself would be; the wrapper's `programs` dict holds them. With no options `fn` is returned unchanged. Should this jaxlib not know an
  option, the program is compiled without the options and a warning says which was refused, so a
  speed setting never stops a run.
  """
  if not options:
    return fn
  options = dict(options)
  compiled: dict[tuple, Callable] = {}

  def call(*args):
    key = _signature(args)
    program = compiled.get(key)
    if program is None:
      lowered = fn.lower(*args)
      try:
        program = lowered.compile(compiler_options=options)
      except jax.errors.JaxRuntimeError as e:
        if "No such compile option" not in str(e):
          raise
        logging.warning("XLA refused the compiler options %s (%s); compiling without them.",
                        options, e)
        program = lowered.compile()
      compiled[key] = program
    return program(*args)

  call.__wrapped__ = fn
  call.__doc__ = fn.__doc__
  call.programs = compiled  # the compiled programs by signature, for inspection
  return call
