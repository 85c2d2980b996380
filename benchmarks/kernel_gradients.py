"""Where XLA:CPU's convolution kernel gradients lose to oneDNN: transposes or the kernel itself.

    python -m benchmarks.kernel_gradients [--repeats 15]

For the 3x3 stride-1 convolutions of the `svhn` networks (batch 100), times on the default
backend, ms (median after warm-up):

  fwd              the convolution;
  dW autodiff      its kernel gradient as `jax.vjp` gives it (XLA rewrites it as a convolution
                   whose batch is the input's channels, after transposing both operands so the
                   batch is minor);
  dW pretransposed that same convolution on operands transposed beforehand (the transposes not
                   timed): what the gradient would cost if the transposes were free;
  torch fwd / dW   PyTorch's `conv2d` and `torch.nn.grad.conv2d_weight` (oneDNN on CPU), when
                   torch is installed.

The pre-transposed form is checked to give the autodiff gradient (relative error printed).
Compiled with `svhn`'s XLA options (`train.xla_cpu_ynnpack=False` on CPU).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import run
from hebm_jax import xla_options

SHAPES = ((100, 32, 32, 32), (100, 16, 32, 32), (100, 16, 64, 64), (100, 8, 64, 64))
_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)


def row(batch: int, size: int, cin: int, cout: int, repeats: int, options: dict) -> dict:
  """Timings (ms) of one (batch, size x size, cin -> cout) 3x3 convolution and its dW."""
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (batch, size, size, cin))
  dy = jax.random.normal(jax.random.fold_in(key, 1), (batch, size, size, cout))
  w = jax.random.normal(jax.random.fold_in(key, 2), (3, 3, cin, cout))
  x_t, dy_t = jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3))

  def compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile(options or None)

  fwd = compiled(_conv, x, w)
  autodiff = compiled(lambda x, w, dy: jax.vjp(lambda w: _conv(x, w), w)[1](dy)[0], x, w, dy)
  pretransposed = compiled(_conv, x_t, dy_t)  # (Cin, 3, 3, Cout)
  want = np.asarray(autodiff(x, w, dy))
  got = np.asarray(pretransposed(x_t, dy_t)).transpose(1, 2, 0, 3)
  out = {"shape": f"B{batch} {size}x{size} {cin}->{cout}",
         "relative_error": float(np.abs(got - want).max() / np.abs(want).max())}
  for name, fn in (("fwd", lambda: fwd(x, w)), ("dw_autodiff", lambda: autodiff(x, w, dy)),
                   ("dw_pretransposed", lambda: pretransposed(x_t, dy_t))):
    out[f"{name}_ms"] = 1e3 * run.timed(lambda fn=fn: jax.block_until_ready(fn()), repeats)[1]
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  tx, tdy = torch.randn(batch, cin, size, size), torch.randn(batch, cout, size, size)
  tw = torch.randn(cout, cin, 3, 3)
  out["torch_fwd_ms"] = 1e3 * run.timed(
      lambda: torch.nn.functional.conv2d(tx, tw, padding=1), repeats)[1]
  out["torch_dw_ms"] = 1e3 * run.timed(
      lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tdy, padding=1), repeats)[1]
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args(argv)
  import configs.svhn  # pylint: disable=g-import-not-at-top
  options = xla_options.for_config(configs.svhn.get_config().train)
  env = run.environment()
  print(f"3x3 convolution kernel gradients; {env['device']}, jax {env['jax']}, torch "
        f"{env.get('torch')}, XLA options {options or '{}'}, "
        f"GLIBC_TUNABLES={env.get('GLIBC_TUNABLES') or '(unset)'}")
  print("shape | fwd | dW autodiff | dW pretransposed | torch fwd | torch dW | rel. error")
  for shape in SHAPES:
    r = row(*shape, args.repeats, options)
    cells = [f"{r[k]:.2f}" if k in r else "-" for k in
             ("fwd_ms", "dw_autodiff_ms", "dw_pretransposed_ms", "torch_fwd_ms", "torch_dw_ms")]
    print(" | ".join([r["shape"], *cells, f"{r['relative_error']:.1e}"]), flush=True)


if __name__ == "__main__":
  from hebm_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_hugepages()
  main()
