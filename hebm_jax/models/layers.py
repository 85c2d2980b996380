"""Building blocks shared by every model family: PyTorch-initialised layers, activations, heads.

Initialisation follows PyTorch, so that a freshly initialised model has the reference's
statistics: xavier-normal conv kernels (no bias), and PyTorch's default U(+-1/sqrt(fan_in)) for
Dense kernels and biases. Padding reproduces PyTorch's explicit padding (never 'SAME').
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

ACTIVATIONS = ("leaky_relu", "gelu", "swish", "elu", "relu")
OUTPUTS = ("tanh", "sigmoid")
CONV_IMPLS = ("auto", "conv", "matmul", "shift")

_conv_init = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")  # torch xavier_normal_
_dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # torch default


def _dense_bias_init(fan_in: int) -> Callable:
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
  """A Dense layer initialised like `torch.nn.Linear`."""
  return nn.Dense(features, kernel_init=_dense_kernel_init, bias_init=_dense_bias_init(fan_in),
                  name=name)


class DenseParams(nn.Module):
  """The kernel (fan_in, features) and bias (features,) of `torch_dense` under the same names and
  initialisers, returned unapplied so that a caller can fuse several layers into one product."""
  features: int
  fan_in: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    return (self.param("kernel", _dense_kernel_init, (self.fan_in, self.features)),
            self.param("bias", _dense_bias_init(self.fan_in), (self.features,)))


def conv_2d(x: Array, kernel: Array, stride: int, padding: int, impl: str = "auto") -> Array:
  """PyTorch's Conv2d(k, stride, padding) without bias.

  Args:
    x: (B, H, W, Cin) input.
    kernel: (k, k, Cin, Cout), the layout of `nn.Conv`.
    stride: stride.
    padding: PyTorch's `padding` (zeros on every side).
    impl: one of `CONV_IMPLS`, see `_conv_impl`: 'conv' (XLA's convolution, the padding in its
      window), 'matmul' (one matrix product per kernel tap over strided views of the padded
      input), 'shift' (one product of the input with every tap at once, then a sum of shifted
      slices) or 'auto'. 'matmul' suits layers bound by reading their weights, where XLA:CPU
      computed the kernel gradient as a convolution with the output as its window (60 % of the
      `svhn_fid` encoder's time at batch 4).

  Returns:
    (B, (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1, Cout).
  """
  k, s, p = kernel.shape[0], stride, padding
  b, h, w, cin = x.shape
  ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  impl = _conv_impl(impl, b * ho * wo, cin, k * k * kernel.shape[-1])
  if impl == "conv":
    return jax.lax.conv_general_dilated(x, kernel, (s, s), ((p, p), (p, p)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if impl == "shift":
    taps = jnp.transpose(kernel, (0, 1, 3, 2)).reshape(k * k * kernel.shape[-1], cin)
    return _shift_correlate(x, taps, (k, k), ((p, p), (p, p)), s)
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  taps = jax.lax.split(kernel.reshape(k * k, cin, kernel.shape[-1]), [1] * (k * k))
  out = None
  for i in range(k):
    for j in range(k):
      view = xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
      y = jnp.einsum("bhwc,co->bhwo", view, taps[i * k + j][0])
      out = y if out is None else out + y
  return out


class Conv(nn.Module):
  """Bias-free Conv2d(k, stride, padding) with PyTorch semantics (`conv_2d`).

  Its parameter is the one `nn.Conv` would have under the same name ('kernel', (k, k, Cin,
  features), xavier-normal), so checkpoints and the converter are unaffected by the formulation.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 1
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", _conv_init,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    return conv_2d(x, kernel, self.stride, self.padding, self.impl)


def conv(features: int, kernel: int, stride: int, name: str, padding: int = 1) -> Conv:
  """Bias-free Conv2d with PyTorch padding (k4 s2 p1 halves, k3 s1 p1 keeps the size).

  XLA's own convolution, padding in its window, except for weight-bound layers and layers with
  few output channels (`conv_2d`, `_conv_impl`): im2col products, space-to-depth forms and
  matrix-product kernel gradients all measured slower on CPU for the `svhn` encoder's shapes.
  """
  return Conv(features, kernel, stride, padding, name=name)


def _conv_impl(impl: str, positions: int, cin: int, tap_outputs: int) -> str:
  """The formulation `impl` selects for a layer: 'auto' picks 'matmul' where the output has fewer
  positions (B * H' * W') than the input has channels (the layer is bound by reading its
  weights), 'shift' where kh * kw * Cout <= Cin (an image layer: XLA:CPU ran the 32 -> 3 channel
  3x3 layer of the `svhn` generator, forward and kernel gradient, at under 10 % of its matmul
  peak), else 'conv'."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"Unknown convolution implementation {impl!r}; expected one of {CONV_IMPLS}.")
  if impl != "auto":
    return impl
  if positions < cin:
    return "matmul"
  return "shift" if tap_outputs <= cin else "conv"


Pads = tuple[tuple[int, int], tuple[int, int]]


def _tap_window(size: int, out: int, low: int, offset: int, stride: int) -> tuple[int, int]:
  """(low, high) padding that maps an input axis of `size` onto the `stride`-strided positions
  read by the tap at `offset` of a correlation padded by `low` with `out` outputs."""
  start = low - offset
  return start, stride * (out - 1) + 1 - size - start


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _shift_sum(y: Array, window: tuple[int, int], cout: int, pads: Pads, stride: int) -> Array:
  """sum over taps (i, j) of y[..., tap (i, j)] read at stride * o + (i, j) - pads_low.

  y: (B, H, W, kh * kw * Cout), tap-major channels -> (B, H', W', Cout).
  """
  out = None
  for v in _shift_views(y, window, cout, pads, stride):
    out = v if out is None else out + v
  return out


def _shift_views(y: Array, window: tuple[int, int], cout: int, pads: Pads,
                 stride: int) -> list[Array]:
  kh, kw = window
  h, w = y.shape[1], y.shape[2]
  ho = (h + sum(pads[0]) - kh) // stride + 1
  wo = (w + sum(pads[1]) - kw) // stride + 1
  zero = jnp.zeros((), y.dtype)
  views = []
  for i in range(kh):
    for j in range(kw):
      t = (i * kw + j) * cout
      yh, yw = _tap_window(h, ho, pads[0][0], i, stride), _tap_window(w, wo, pads[1][0], j, stride)
      v = jax.lax.pad(y[..., t:t + cout], zero, ((0, 0, 0), (*yh, 0), (*yw, 0), (0, 0, 0)))
      views.append(v[:, ::stride, ::stride] if stride > 1 else v)
  return views


def _shift_sum_fwd(y, window, cout, pads, stride):
  return _shift_sum(y, window, cout, pads, stride), (y.shape[1], y.shape[2])


def _shift_sum_bwd(window, cout, pads, stride, size, g):
  # Each tap's cotangent is g placed back at the positions it read: one concatenation over taps
  # (autodiff of the slices padded every tap to all kh * kw * Cout channels before summing them).
  kh, kw = window
  (h, w), ho, wo = size, g.shape[1], g.shape[2]
  zero = jnp.zeros((), g.dtype)
  parts = []
  for i in range(kh):
    for j in range(kw):
      lh, hh = _tap_window(h, ho, pads[0][0], i, stride)
      lw, hw = _tap_window(w, wo, pads[1][0], j, stride)
      parts.append(jax.lax.pad(g, zero, ((0, 0, 0), (-lh, -hh, stride - 1),
                                         (-lw, -hw, stride - 1), (0, 0, 0))))
  return (jnp.concatenate(parts, axis=-1),)


_shift_sum.defvjp(_shift_sum_fwd, _shift_sum_bwd)


def _shift_correlate(x: Array, taps: Array, window: tuple[int, int], pads: Pads,
                     stride: int) -> Array:
  """Correlation as one product with every tap, then a sum of shifted slices.

  x: (B, H, W, Cin); taps: (kh * kw * Cout, Cin), tap-major rows -> (B, H', W', Cout). For a
  layer with few output channels the product (B * H * W, Cin) x (Cin, kh * kw * Cout) and its two
  gradients are dense matrix products, where XLA:CPU's convolution kernels for a 3-channel output
  are not.
  """
  y = jnp.einsum("bhwc,tc->bhwt", x, taps)
  return _shift_sum(y, window, taps.shape[0] // (window[0] * window[1]), pads, stride)


def _correlate(x: Array, kernel: Array, pads: Pads, impl: str) -> Array:
  """Stride-1 cross-correlation of x (B, H, W, Cin) padded by `pads`, kernel (kh, kw, Cout, Cin).

  `pads` are ((low, high), (low, high)) for H and W; negative values crop. On the conv path they
  stay inside the convolution: XLA:CPU runs a 'VALID' convolution of an already padded array
  (forward, and above all its kernel gradient, whose window is then the whole output) up to 20x
  slower than the same convolution with the padding in its window, so padding first and
  correlating 'VALID' made the generator's kernel gradients the slowest operations of the step.

  The kernel stays in the (.., Cout, Cin) layout it is stored in: a transpose here would become a
  transposed read inside the optimiser's fused update of its gradient, which on XLA:CPU cost more
  than the convolutions themselves for the 2048-channel layers. `impl`: 'conv', 'matmul' or
  'shift' (see `conv_2d`).
  """
  kh, kw, cout, cin = kernel.shape
  if impl == "conv":
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads,
                                        dimension_numbers=("NHWC", "HWOI", "NHWC"))
  if impl == "shift":
    return _shift_correlate(x, kernel.reshape(kh * kw * cout, cin), (kh, kw), pads, 1)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  # One (Cout, Cin) matrix per tap, split (not indexed) so that the kernel's gradient is a single
  # concatenation of per-tap products rather than a sum of zero-padded copies of the kernel.
  taps = jax.lax.split(kernel.reshape(kh * kw, cout, cin), [1] * (kh * kw))
  out = None
  for i in range(kh):
    for j in range(kw):
      y = jnp.einsum("bhwc,oc->bhwo", x[:, i:i + ho, j:j + wo], taps[i * kw + j][0])
      out = y if out is None else out + y
  return out


def _phase_taps(kernel: int, stride: int, padding: int, phase: int) -> tuple[int, int, int]:
  """(first tap, number of taps, lowest input offset) of one output phase of a transposed conv.

  ConvTranspose2d writes x[i] * w[t] to output o = stride * i + t - padding. Output phase r
  (o = stride * m + r) therefore receives the taps t0, t0 + stride, ... (t0 = (r + padding) mod
  stride), tap t0 + stride * d reading input m + q - d with q = (r + padding) // stride.
  """
  q, t0 = divmod(phase + padding, stride)
  n = max(0, -(-(kernel - t0) // stride))
  return t0, n, q - n + 1


def conv_transpose_2d(x: Array, kernel: Array, stride: int, padding: int,
                      impl: str = "auto") -> Array:
  """PyTorch's ConvTranspose2d(k, stride, padding) without bias, from stride-1 operations only.

  Each of the stride x stride output phases is a small stride-1 correlation of the input with a
  strided slice of the kernel (the sub-pixel form of a transposed convolution), so neither the
  forward pass nor either gradient needs an input-dilated convolution, which XLA:CPU runs an
  order of magnitude slower than PyTorch on the generator's shapes. Equal to
  `lax.conv_transpose(..., transpose_kernel=True)` up to float rounding (tests).

  Args:
    x: (B, H, W, Cin) input.
    kernel: (k, k, Cout, Cin), the layout of `nn.ConvTranspose(transpose_kernel=True)` (and of
      PyTorch's (Cin, Cout, k, k) weight with its axes permuted).
    stride: stride (the upsampling factor).
    padding: PyTorch's `padding`.
    impl: one of `CONV_IMPLS` as in `conv_2d`, chosen per output phase for 'auto'.

  Returns:
    (B, (H - 1) * stride - 2 * padding + k, (W - 1) * stride - 2 * padding + k, Cout).
  """
  k, s, p = kernel.shape[0], stride, padding
  b, h, w, cin = x.shape
  h_out, w_out = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
  mh, mw = -(-h_out // s), -(-w_out // s)  # outputs per phase
  rows = []
  for ry in range(s):
    t0y, ny, loy = _phase_taps(k, s, p, ry)
    row = []
    for rx in range(s):
      t0x, nx, lox = _phase_taps(k, s, p, rx)
      # Taps in correlation order: tap t0 + s*d reads offset q - d, so the slice is reversed.
      taps = kernel[t0y::s, t0x::s][::-1, ::-1]
      pads = ((-loy, mh + loy + ny - 1 - h), (-lox, mw + lox + nx - 1 - w))
      if ny == 0 or nx == 0:  # kernel < stride: no tap writes this phase
        row.append(jnp.zeros((b, mh, mw, kernel.shape[2]), x.dtype))
        continue
      phase_impl = _conv_impl(impl, b * mh * mw, cin, ny * nx * kernel.shape[2])
      row.append(_correlate(x, taps, pads, phase_impl))
    rows.append(jnp.stack(row, axis=3))
  y = jnp.stack(rows, axis=2).reshape(b, mh * s, mw * s, kernel.shape[2])
  return y[:, :h_out, :w_out]


class ConvTranspose(nn.Module):
  """Bias-free ConvTranspose2d(k, stride, padding) with PyTorch semantics (`conv_transpose_2d`).

  Its parameter is the one `nn.ConvTranspose(transpose_kernel=True)` would have under the same
  name ('kernel', (k, k, features, Cin), xavier-normal), so checkpoints and the converter are
  unaffected by the formulation.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 1
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", _conv_init,
                        (self.kernel_size, self.kernel_size, self.features, x.shape[-1]))
    return conv_transpose_2d(x, kernel, self.stride, self.padding, self.impl)


def conv_transpose(features: int, kernel: int, stride: int, name: str,
                   padding: int = 1) -> ConvTranspose:
  """Bias-free ConvTranspose2d(k, s, padding) with PyTorch semantics (k4 s2 p1 doubles the size)."""
  return ConvTranspose(features, kernel, stride, padding, name=name)


def activation_fn(name: str, negative_slope: float = 0.2) -> Callable[[Array], Array]:
  """Returns the activation called `name` (one of `ACTIVATIONS`)."""
  if name == "leaky_relu":
    return lambda x: nn.leaky_relu(x, negative_slope)
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=False)
  if name == "swish":
    return nn.swish
  if name == "elu":
    return nn.elu
  if name == "relu":
    return nn.relu
  raise ValueError(f"Unknown activation {name!r}; expected one of {ACTIVATIONS}.")


def output_image(logits: Array, output: str, return_logits: bool = False) -> Array:
  """The generator's last pre-activation map -> image in [-1, 1] (or the map itself).

  'tanh' is the reference's output; 'sigmoid' rescales a Bernoulli mean sigmoid(logits) in [0, 1]
  to [-1, 1], so images live in one range whatever the likelihood.
  """
  if return_logits:
    return logits
  if output == "tanh":
    return jnp.tanh(logits)
  if output == "sigmoid":
    return 2.0 * jax.nn.sigmoid(logits) - 1.0
  raise ValueError(f"Unknown generator output {output!r}; expected one of {OUTPUTS}.")


def concat_latents(zs: Sequence[Array]) -> Array:
  """[(B, d_0), ..., (B, d_{L-1})] -> (B, sum d_l), bottom layer first."""
  return jnp.concatenate(list(zs), axis=-1)


def split_latents(z: Array, z_dims: Sequence[int]) -> list[Array]:
  """(..., sum d_l) -> [(..., d_0), ..., (..., d_{L-1})]; inverse of `concat_latents`."""
  offsets = [0]
  for d in z_dims:
    offsets.append(offsets[-1] + d)
  return [z[..., a:b] for a, b in zip(offsets[:-1], offsets[1:])]


STD_HEADS = ("logvar", "sigmoid")


class GaussianHead(nn.Module):
  """Flattened features -> (mean, logvar), both (B, dim).

  `std_head` 'logvar' (the reference's): the second linear map is the log-variance, unconstrained.
  'sigmoid' (VLAE's): it is the pre-activation of the standard deviation sigmoid(.) + 0.001, so
  0.001 < std < 1.001; the head still returns log(std^2), which the losses take.
  """
  dim: int
  std_head: str = "logvar"

  @nn.compact
  def __call__(self, h: Array) -> tuple[Array, Array]:
    h = h.reshape(h.shape[0], -1)
    # The parameters of two `torch_dense` layers ('mean', 'logvar'), applied as one product: XLA:CPU
    # took about twice as long for two 2-column products of the 8192 `svhn` features (and their
    # gradients) as for one 4-column product.
    km, bm = DenseParams(self.dim, h.shape[-1], name="mean")()
    kl, bl = DenseParams(self.dim, h.shape[-1], name="logvar")()
    y = h @ jnp.concatenate([km, kl], 1) + jnp.concatenate([bm, bl])
    mean, second = y[:, :self.dim], y[:, self.dim:]
    if self.std_head == "logvar":
      return mean, second
    if self.std_head == "sigmoid":
      return mean, 2.0 * jnp.log(jax.nn.sigmoid(second) + 0.001)
    raise ValueError(f"Unknown std_head {self.std_head!r}; expected one of {STD_HEADS}.")


class MaybeBatchNorm(nn.Module):
  """BatchNorm when `enabled` (batch statistics in training, running averages otherwise), else identity.

  `axis_name` averages the batch statistics over a pmap axis, so that N devices normalise with the
  statistics of the global batch, as one device would. `use_scale=False` follows the VLAE code
  (tf.contrib's batch_norm default: a learned offset, no scale).
  """
  enabled: bool
  use_scale: bool = False
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    if not self.enabled:
      return x
    return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                        use_scale=self.use_scale, axis_name=self.axis_name if train else None,
                        name="bn")(x)
