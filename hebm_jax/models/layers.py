"""Building blocks shared by every model family: PyTorch-initialised layers, activations, heads.

Initialisation follows PyTorch, so that a freshly initialised model has the reference's
statistics: xavier-normal conv kernels (no bias), and PyTorch's default U(+-1/sqrt(fan_in)) for
Dense kernels and biases. Padding reproduces PyTorch's explicit padding (never 'SAME').
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

ACTIVATIONS = ("leaky_relu", "gelu", "swish", "elu", "relu")
OUTPUTS = ("tanh", "sigmoid")

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


def conv(features: int, kernel: int, stride: int, name: str, padding: int = 1) -> nn.Conv:
  """Bias-free Conv2d with PyTorch padding (k4 s2 p1 halves, k3 s1 p1 keeps the size)."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=False,
                 kernel_init=_conv_init, name=name)


def conv_transpose(features: int, kernel: int, stride: int, name: str,
                   padding: int = 1) -> nn.ConvTranspose:
  """Bias-free ConvTranspose2d(k, s, padding) with PyTorch semantics (k4 s2 p1 doubles the size)."""
  pad = kernel - 1 - padding
  return nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride),
                          padding=((pad, pad), (pad, pad)), transpose_kernel=True, use_bias=False,
                          kernel_init=_conv_init, name=name)


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


class GaussianHead(nn.Module):
  """Flattened features -> (mean, logvar), both (B, dim); logvar unconstrained as in the reference."""
  dim: int

  @nn.compact
  def __call__(self, h: Array) -> tuple[Array, Array]:
    h = h.reshape(h.shape[0], -1)
    return (torch_dense(self.dim, h.shape[-1], "mean")(h),
            torch_dense(self.dim, h.shape[-1], "logvar")(h))


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
