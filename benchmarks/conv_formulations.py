"""The training step under each way of writing the convolutions, on the default backend.

    python -m benchmarks.conv_formulations [--configs svhn,svhn_fid] [--repeats 5] [--json PATH]

`hebm_jax.models.layers` picks a formulation per layer (`layers._conv_impl`): the rule was tuned
by profiling XLA:CPU. This script measures whether that rule is also the right one on another
backend (a GPU). Each config's jitted, state-donating train step is compiled and timed under:

  auto    the library's rule (what the trainer runs);
  conv    XLA's convolution for every layer: strided `Conv2d` as one strided convolution,
          `ConvTranspose2d` in the sub-pixel form (stride x stride stride-1 convolutions);
  lax     the textbook forms: `lax.conv_general_dilated` with the stride, and
          `lax.conv_transpose(..., transpose_kernel=True)` (an input-dilated convolution), i.e.
          what `flax.linen.Conv` / `ConvTranspose` compile to.

The three give the same numbers up to float rounding (tests/test_layers.py); parameters and
checkpoints do not depend on the formulation. The swap is done by rebinding the module-level
functions of `layers` while the step is traced, which is why this is a benchmark and not a
config option. Prints one table (ms per step, compile s, XLA temporaries) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

import jax

from benchmarks import run
from hebm_jax.models import layers

FORMULATIONS = ("auto", "conv", "lax")


def _lax_conv_2d(x, kernel, stride, padding, impl="auto"):
  del impl
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _lax_conv_transpose_2d(x, kernel, stride, padding, impl="auto"):
  del impl
  pad = kernel.shape[0] - 1 - padding
  return jax.lax.conv_transpose(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)


@contextlib.contextmanager
def formulation(name: str) -> Iterator[None]:
  """Traces inside this context use formulation `name` (one of FORMULATIONS) for every layer."""
  saved = {k: getattr(layers, k) for k in ("_conv_impl", "conv_2d", "conv_transpose_2d")}
  if name == "conv":
    rule = saved["_conv_impl"]
    layers._conv_impl = lambda impl, *a: "conv" if impl == "auto" else rule(impl, *a)  # pylint: disable=protected-access
  elif name == "lax":
    layers.conv_2d, layers.conv_transpose_2d = _lax_conv_2d, _lax_conv_transpose_2d
  elif name != "auto":
    raise ValueError(f"unknown formulation {name!r}; expected one of {FORMULATIONS}")
  try:
    yield
  finally:
    for k, v in saved.items():
      setattr(layers, k, v)


def rows(name: str, batch: int, repeats: int) -> list[dict]:
  """The train step of config `name` at `batch` under each formulation."""
  out = []
  for form in FORMULATIONS:
    config, model, state, shape = run._model_and_state(name)  # pylint: disable=protected-access
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + shape, minval=-1.0, maxval=1.0)
    with formulation(form):
      timing, _ = run.step_timing(model, state, x, jax.random.PRNGKey(2), repeats,
                                  compiler_options=run._compiler_options(config))  # pylint: disable=protected-access
    timing.pop("flops")
    out.append({"config": name, "batch": batch, "formulation": form, **timing})
    print(f"{name} {form}: {timing['step_ms']:.1f} ms", flush=True)
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="svhn,svhn_fid")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=0, help="0: as benchmarks.run chooses")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  names = [c for c in args.configs.split(",") if c]
  run.check_config_names(parser, names)
  results = {"environment": run.environment(), "rows": []}
  for name in names:
    batch = args.batch or run.default_batch(name)
    results["rows"] += rows(name, batch, args.repeats)
    if args.json:
      run.write_json(args.json, results)
  run.print_rows("train step by convolution formulation", results, [
      ("config", "config", "s"), ("batch", "batch", "d"), ("formulation", "formulation", "s"),
      ("step ms", "step_ms", ".1f"), ("compile s", "step_compile_s", ".1f"),
      ("XLA temporaries MB", "step_temp_mb", ".0f")])


if __name__ == "__main__":
  from hebm_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_hugepages()
  main()
