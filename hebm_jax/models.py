"""Networks of the hierarchical joint-EBM-prior model (paper Sec. 3), in NHWC.

* `EnergyPrior`: the MLP f_alpha on the concatenation [z_1, ..., z_L] (Eq. 3); one scalar per example.
* `HierarchicalEncoder`: the bottom-up inference network q_phi(z|x) with one ladder head per layer (Eq. 7-8).
* `HierarchicalGenerator`: the top-down generator g_beta(z) (Eq. 4-5).

Layer index 0 is the bottom (finest) latent, index L-1 the top one, as in the authors' code.
Initialisation follows PyTorch: xavier-normal conv kernels (no bias), and PyTorch's default
U(+-1/sqrt(fan_in)) for Dense kernels and biases, so that a freshly initialised model has the
reference's statistics. Flattening and reshaping use NHWC order; `hebm_jax.convert` permutes the
authors' NCHW-ordered Linear weights accordingly.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

MERGE_MODES = ("add", "concat")
ACTIVATIONS = ("leaky_relu", "gelu", "swish", "elu")

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


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
  """Bias-free Conv2d with PyTorch padding (k4 s2 p1 halves, k3 s1 p1 keeps the size)."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((1, 1), (1, 1)),
                 use_bias=False, kernel_init=_conv_init, name=name)


def _conv_transpose(features: int, kernel: int, stride: int, name: str) -> nn.ConvTranspose:
  """Bias-free ConvTranspose2d(k, s, padding=1) with PyTorch semantics (k4 s2 doubles the size)."""
  pad = kernel - 1 - 1
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
  raise ValueError(f"Unknown activation {name!r}; expected one of {ACTIVATIONS}.")


def concat_latents(zs: Sequence[Array]) -> Array:
  """[(B, d_0), ..., (B, d_{L-1})] -> (B, sum d_l), bottom layer first."""
  return jnp.concatenate(list(zs), axis=-1)


def split_latents(z: Array, z_dims: Sequence[int]) -> list[Array]:
  """(..., sum d_l) -> [(..., d_0), ..., (..., d_{L-1})]; inverse of `concat_latents`."""
  offsets = [0]
  for d in z_dims:
    offsets.append(offsets[-1] + d)
  return [z[..., a:b] for a, b in zip(offsets[:-1], offsets[1:])]


class _MaybeSNDense(nn.Module):
  """Torch-initialised Dense, optionally spectral-normalised (one power iteration per call)."""
  features: int
  spectral_norm: bool

  @nn.compact
  def __call__(self, x: Array, update_stats: bool) -> Array:
    dense = torch_dense(self.features, x.shape[-1], name="dense")
    if not self.spectral_norm:
      return dense(x)
    y = nn.SpectralNorm(dense, n_steps=1, epsilon=1e-12, name="sn")(x, update_stats=update_stats)
    if self.is_initializing():
      # flax's SpectralNorm writes W0 / sigma back into params at init; keep W0 itself (PyTorch's
      # `weight_orig`), so that parameters have the reference's scale and Adam steps its size.
      sigma = self.get_variable("batch_stats", "sn")["dense/kernel/sigma"]
      dense.put_variable("params", "kernel", dense.get_variable("params", "kernel") * sigma)
    return y


class EnergyPrior(nn.Module):
  """f_alpha([z_1..z_L]): `num_layers` x (Dense(width) -> act) -> Dense(1), optional spectral norm.

  With spectral normalisation (as in the reference, on every Dense including the output), each
  call with `update_stats=True` runs one power iteration and updates `u` in the `batch_stats`
  collection, as PyTorch's `spectral_norm` does in train mode.
  """
  num_layers: int = 4
  width: int = 50
  activation: str = "leaky_relu"
  negative_slope: float = 0.2
  spectral_norm: bool = True

  @nn.compact
  def __call__(self, z: Array, update_stats: bool = True) -> Array:
    """z: (B, D) concatenated latents -> f(z): (B,)."""
    act = activation_fn(self.activation, self.negative_slope)
    h = z
    for i in range(self.num_layers):
      h = act(_MaybeSNDense(self.width, self.spectral_norm, name=f"fc{i + 1}")(h, update_stats))
    return _MaybeSNDense(1, self.spectral_norm, name="out")(h, update_stats)[..., 0]


class _DownBlock(nn.Module):
  """conv k4 s2 p1 -> act -> conv k3 s1 p1 -> act (the reference `conv2d_relu` pair)."""
  features: int
  negative_slope: float

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.leaky_relu(_conv(self.features, 4, 2, "down")(x), self.negative_slope)
    return nn.leaky_relu(_conv(self.features, 3, 1, "conv")(x), self.negative_slope)


class _GaussianHead(nn.Module):
  """Flattened features -> (mean, logvar), both (B, dim); logvar unconstrained as in the reference."""
  dim: int

  @nn.compact
  def __call__(self, h: Array) -> tuple[Array, Array]:
    h = h.reshape(h.shape[0], -1)
    return (torch_dense(self.dim, h.shape[-1], "mean")(h),
            torch_dense(self.dim, h.shape[-1], "logvar")(h))


class HierarchicalEncoder(nn.Module):
  """Bottom-up ladder encoder q_phi(z|x) (paper Eq. 7-8).

  For layers l < L-1: ladder_l = DownBlock(channels[l]) on r_l, then a Gaussian head; the trunk
  r_{l+1} = DownBlock(channels[l])(r_l) with its own weights (r_0 = x). The top layer flattens
  r_{L-1} and applies two Dense(channels[L-1]) + act before its head.

  Attributes:
    z_dims: latent size per layer, bottom first (length L).
    channels: width per layer, length L (conv widths, then the top MLP width).
    negative_slope: LeakyReLU slope (0.01, PyTorch's `F.leaky_relu` default, in the reference).
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  negative_slope: float = 0.01

  @nn.compact
  def __call__(self, x: Array) -> tuple[list[Array], list[Array]]:
    """x: (B, H, W, C) in [-1, 1] -> (means, logvars), lists of L arrays (B, d_l)."""
    num_layers = len(self.z_dims)
    means, logvars = [], []
    r = x
    for l in range(num_layers - 1):
      feat = _DownBlock(self.channels[l], self.negative_slope, name=f"ladder{l}")(r)
      mean, logvar = _GaussianHead(self.z_dims[l], name=f"head{l}")(feat)
      means.append(mean)
      logvars.append(logvar)
      r = _DownBlock(self.channels[l], self.negative_slope, name=f"trunk{l}")(r)
    top = num_layers - 1
    h = r.reshape(r.shape[0], -1)
    for j in range(2):
      h = nn.leaky_relu(torch_dense(self.channels[top], h.shape[-1], f"ladder{top}_fc{j}")(h),
                        self.negative_slope)
    mean, logvar = _GaussianHead(self.z_dims[top], name=f"head{top}")(h)
    means.append(mean)
    logvars.append(logvar)
    return means, logvars


class HierarchicalGenerator(nn.Module):
  """Top-down generator g_beta(z_1..z_L) (paper Eq. 5), image in [-1, 1] through tanh.

  Two block families, chosen by `merge`, reproduce the authors' two SVHN generators and generalise
  them to any number of layers and image size (size s_l = image_size / 2**(l+1) at layer l):

  * ``add`` (SVHN-HS model): the top MLP maps z_{L-1} to a vector of width channels[L-2] to which
    Dense(z_{L-2}) is added; it is projected to an s_{L-2}^2 x channels[L-2] map. Each layer l then
    doubles the size with ConvT(k4,s2) -> act -> ConvT(k3) down to channels[l-1] (the image
    channels at l = 0), and the next layer's code, Dense(z_{l-1}) reshaped, is added to that
    pre-activation map.
  * ``concat`` (SVHN-FID model): the top MLP of width `top_width` maps z_{L-1} to an
    s_{L-2}^2 x channels[L-1] map (with act); each layer l concatenates act(Dense(z_l)) reshaped to
    the map's shape, then ConvT(k3) -> ConvT(k4,s2) to channels[l] -> ConvT(k3), all with act; a
    last ConvT(k3) to the image channels precedes tanh.

  Attributes:
    z_dims: latent size per layer, bottom first (length L >= 2).
    channels: widths per layer, length L (as the encoder's).
    image_size: output height = width; must be divisible by 2**(L-1).
    image_channels: output channels.
    merge: 'add' or 'concat'.
    top_width: width of the top MLP; 0 means channels[-1].
    negative_slope: LeakyReLU slope (0.2 in the reference).
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  image_size: int
  image_channels: int
  merge: str = "add"
  top_width: int = 0
  negative_slope: float = 0.2

  def _act(self, x: Array) -> Array:
    return nn.leaky_relu(x, self.negative_slope)

  @nn.compact
  def __call__(self, zs: Sequence[Array]) -> Array:
    """zs: list of L arrays (B, d_l), bottom first -> image (B, H, W, C) in [-1, 1]."""
    num_layers = len(self.z_dims)
    top = num_layers - 1
    width = self.top_width or self.channels[-1]
    size = lambda l: self.image_size // 2 ** (l + 1)
    batch = zs[0].shape[0]

    h = zs[top]
    for j in range(2):
      h = self._act(torch_dense(width, h.shape[-1], f"top_fc{j}")(h))

    if self.merge == "add":
      c = self.channels[top - 1]
      h = torch_dense(c, width, "top_out")(h)
      l = top - 1
      h = h + torch_dense(c, self.z_dims[l], f"inject{l}")(zs[l])
      s = size(l)
      h = self._act(torch_dense(s * s * c, c, f"project{l}")(h)).reshape(batch, s, s, c)
      for l in range(top - 1, -1, -1):
        if l < top - 1:
          c = h.shape[-1]
          s = size(l)
          code = torch_dense(s * s * c, self.z_dims[l], f"inject{l}")(zs[l])
          h = h + code.reshape(batch, s, s, c)
        out = self.channels[l - 1] if l > 0 else self.image_channels
        h = self._act(_conv_transpose(h.shape[-1], 4, 2, f"up{l}")(h))
        h = _conv_transpose(out, 3, 1, f"conv{l}")(h)
      return jnp.tanh(h)

    if self.merge == "concat":
      s = size(top - 1)
      c = self.channels[top]
      h = self._act(torch_dense(s * s * c, width, "top_out")(h)).reshape(batch, s, s, c)
      for l in range(top - 1, -1, -1):
        c = h.shape[-1]
        s = size(l)
        code = self._act(torch_dense(s * s * c, self.z_dims[l], f"inject{l}")(zs[l]))
        h = jnp.concatenate([h, code.reshape(batch, s, s, c)], axis=-1)
        h = self._act(_conv_transpose(c, 3, 1, f"merge{l}")(h))
        h = self._act(_conv_transpose(self.channels[l], 4, 2, f"up{l}")(h))
        h = self._act(_conv_transpose(self.channels[l], 3, 1, f"conv{l}")(h))
      return jnp.tanh(_conv_transpose(self.image_channels, 3, 1, "to_image")(h))

    raise ValueError(f"Unknown merge mode {self.merge!r}; expected one of {MERGE_MODES}.")


def build_models(config) -> tuple[HierarchicalEncoder, HierarchicalGenerator, EnergyPrior | None]:
  """Instantiates (encoder, generator, prior) from a config; prior is None for `prior.type='gaussian'`."""
  m, d, p = config.model, config.data, config.prior
  encoder = HierarchicalEncoder(z_dims=tuple(m.z_dims), channels=tuple(m.channels),
                                negative_slope=m.encoder_negative_slope)
  generator = HierarchicalGenerator(z_dims=tuple(m.z_dims), channels=tuple(m.channels),
                                    image_size=d.image_size, image_channels=d.channels,
                                    merge=m.merge, top_width=m.top_width,
                                    negative_slope=m.generator_negative_slope)
  prior = None
  if p.type == "ebm":
    prior = EnergyPrior(num_layers=p.num_layers, width=p.width, activation=p.activation,
                        negative_slope=p.negative_slope, spectral_norm=p.spectral_norm)
  return encoder, generator, prior
