"""The authors' SVHN model families (REFERENCE Sec. 2.1, 2.2), generic over layers and image size.

* `HierarchicalEncoder`: the bottom-up inference network q_phi(z|x) with one ladder head per layer
  (Eq. 7-8).
* `HierarchicalGenerator`: the top-down generator g_beta(z) (Eq. 4-5), with the additive merge of
  the SVHN-HS model (family 'hs') or the channel concatenation of the SVHN-FID model (family 'fid').

Layer index 0 is the bottom (finest) latent, index L-1 the top one, as in the authors' code.
Flattening and reshaping use NHWC order; `hebm_jax.convert` permutes the authors' NCHW-ordered
Linear weights accordingly.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hebm_jax.models.layers import GaussianHead, conv, conv_transpose, output_image, torch_dense

Array = jax.Array

MERGE_MODES = ("add", "concat")


class DownBlock(nn.Module):
  """conv k4 s2 p1 -> act -> conv k3 s1 p1 -> act (the reference `conv2d_relu` pair)."""
  features: int
  negative_slope: float

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.leaky_relu(conv(self.features, 4, 2, "down")(x), self.negative_slope)
    return nn.leaky_relu(conv(self.features, 3, 1, "conv")(x), self.negative_slope)


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
  def __call__(self, x: Array, train: bool = False) -> tuple[list[Array], list[Array]]:
    """x: (B, H, W, C) in [-1, 1] -> (means, logvars), lists of L arrays (B, d_l).

    `train` is accepted for the shared family interface; this family has no normalisation layers.
    """
    num_layers = len(self.z_dims)
    means, logvars = [], []
    r = x
    for l in range(num_layers - 1):
      feat = DownBlock(self.channels[l], self.negative_slope, name=f"ladder{l}")(r)
      mean, logvar = GaussianHead(self.z_dims[l], name=f"head{l}")(feat)
      means.append(mean)
      logvars.append(logvar)
      r = DownBlock(self.channels[l], self.negative_slope, name=f"trunk{l}")(r)
    top = num_layers - 1
    h = r.reshape(r.shape[0], -1)
    for j in range(2):
      h = nn.leaky_relu(torch_dense(self.channels[top], h.shape[-1], f"ladder{top}_fc{j}")(h),
                        self.negative_slope)
    mean, logvar = GaussianHead(self.z_dims[top], name=f"head{top}")(h)
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
    output: 'tanh' (the reference) or 'sigmoid' (Bernoulli likelihood), see `output_image`.
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  image_size: int
  image_channels: int
  merge: str = "add"
  top_width: int = 0
  negative_slope: float = 0.2
  output: str = "tanh"

  def _act(self, x: Array) -> Array:
    return nn.leaky_relu(x, self.negative_slope)

  @nn.compact
  def __call__(self, zs: Sequence[Array], train: bool = False, return_logits: bool = False) -> Array:
    """zs: list of L arrays (B, d_l), bottom first -> image (B, H, W, C) in [-1, 1].

    With `return_logits`, the last pre-activation map instead (the Bernoulli logits when
    `output='sigmoid'`). `train` is accepted for the shared family interface (no normalisation).
    """
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
        h = self._act(conv_transpose(h.shape[-1], 4, 2, f"up{l}")(h))
        h = conv_transpose(out, 3, 1, f"conv{l}")(h)
      return output_image(h, self.output, return_logits)

    if self.merge == "concat":
      s = size(top - 1)
      c = self.channels[top]
      h = self._act(torch_dense(s * s * c, width, "top_out")(h)).reshape(batch, s, s, c)
      for l in range(top - 1, -1, -1):
        c = h.shape[-1]
        s = size(l)
        code = self._act(torch_dense(s * s * c, self.z_dims[l], f"inject{l}")(zs[l]))
        h = jnp.concatenate([h, code.reshape(batch, s, s, c)], axis=-1)
        h = self._act(conv_transpose(c, 3, 1, f"merge{l}")(h))
        h = self._act(conv_transpose(self.channels[l], 4, 2, f"up{l}")(h))
        h = self._act(conv_transpose(self.channels[l], 3, 1, f"conv{l}")(h))
      return output_image(conv_transpose(self.image_channels, 3, 1, "to_image")(h),
                          self.output, return_logits)

    raise ValueError(f"Unknown merge mode {self.merge!r}; expected one of {MERGE_MODES}.")
