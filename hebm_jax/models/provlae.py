"""pro-VLAE's 3DShapes networks (Li et al. 2020, `model_ladder_progress.py`; REFERENCE Sec. 6.2), NHWC.

The paper's 3DShapes model uses "the same inference and generator model and the same latent
dimension as the baseline" pro-VLAE: 64x64x3 images, 3 layers of 3 units. Family 'provlae'
(`ProEncoder`, `ProGenerator`) follows that network, generalised to L >= 1 layers and any image size
divisible by 2**(L+1), with B = ELU followed by batch norm (when `batch_norm`):

    trunk:       h_0 = B(conv k4 s2 p1 c)(x),  h_l = B(conv k4 s2 p1 c)(h_{l-1})       [H / 2^(l+1)]
    ladder_l(h_l): B(conv k4 s2 p1 c) [H / 2^(l+2)] -> flatten -> B(fc f) -> head(d_l)
    gen_l(z_l, g): u = B(fc f)(z_l) -> B(fc s_l^2 c) -> reshape (s_l, s_l, c), s_l = H / 2^(l+2);
                   g = B(convT k4 s2 p1 c)(concat [u, g])  (no concat at the top layer)  [H / 2^(l+1)]
    output:      convT k4 s2 p1 image_channels (g_0)                                     [H] = logits

for l = L-1 (top) down to 0, with channels = (c, f) (pro-VLAE: (32, 256)). At L = 3, H = 64 this
is pro-VLAE's network exactly (h 32/16/8, ladder convs 16/8/4, generator maps 4 -> 8 -> 16 -> 32 ->
64). pro-VLAE's code is 1-indexed (z1 bottom); layer l here is its z_{l+1}.

The generator's last transposed convolution produces logits: with `output='sigmoid'` (the config of
this family, with a Bernoulli likelihood as pro-VLAE's sigmoid cross-entropy) the image is
2 sigmoid(logits) - 1, i.e. pro-VLAE's [0, 1] mean rescaled to the package's [-1, 1].

Departures from pro-VLAE (see also `vlae`'s module docstring, shared by all VLAE-style families):

* Heads: `layers.GaussianHead` (mean, unconstrained log-variance) - the same as pro-VLAE's.
* Initialisation: PyTorch's (`torch_dense`, xavier-normal convs) instead of TF's glorot-uniform.
  Convolutions are bias-free as in the authors' networks (pro-VLAE's convs have a bias before the
  ELU); dense layers keep theirs.
* Batch norm is a flag. pro-VLAE calls `tf.layers.batch_normalization(x)` without `training=`, so
  its BN always uses the (never updated) moving averages, i.e. it is a learned per-channel affine.
  Here, when on, BN normalises with batch statistics in training and running averages in
  evaluation, like the other families, keeping tf.layers' learned scale and offset.
* pro-VLAE's progressive training (fade-in, zeroed lower codes) is a training schedule, not part of
  the network; it is not reproduced.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hebm_jax.models.layers import GaussianHead, conv_transpose, output_image
from hebm_jax.models.vlae import Block, common_problems

Array = jax.Array


class _ProModule(nn.Module):

  def _block(self, kind: str, features: int, name: str) -> Block:
    return Block(kind, features, 4, 2, 1, activation="elu", batch_norm=self.batch_norm,
                 bn_axis_name=self.bn_axis_name, bn_after_activation=True, bn_scale=True, name=name)


class ProEncoder(_ProModule):
  """pro-VLAE's inference network, L layers (see the module docstring).

  Attributes:
    z_dims: latent size per layer, bottom first (pro-VLAE: (3, 3, 3)).
    channels: (c, f): conv width and dense width (pro-VLAE: (32, 256)).
    batch_norm: BN after every hidden ELU (pro-VLAE); no 'batch_stats' when False.
    bn_axis_name: pmap axis over which BN averages batch statistics in training.
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  batch_norm: bool = True
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[list[Array], list[Array]]:
    """x: (B, H, W, C) in [-1, 1] -> (means, logvars), lists of L arrays (B, d_l)."""
    c, f = self.channels
    means, logvars = [], []
    h = x
    for l, dim in enumerate(self.z_dims):
      h = self._block("conv", c, f"trunk{l}_conv")(h, train)
      u = self._block("conv", c, f"ladder{l}_conv")(h, train)
      u = self._block("dense", f, f"ladder{l}_fc")(u.reshape(u.shape[0], -1), train)
      mean, logvar = GaussianHead(dim, name=f"head{l}")(u)
      means.append(mean)
      logvars.append(logvar)
    return means, logvars


class ProGenerator(_ProModule):
  """pro-VLAE's generative network, L layers (see the module docstring).

  Attributes:
    z_dims: latent size per layer, bottom first (pro-VLAE: (3, 3, 3)).
    channels: (c, f), as the encoder's.
    image_size: output height = width, divisible by 2**(L+1) (pro-VLAE: 64).
    image_channels: output channels (3DShapes: 3).
    batch_norm: BN after every hidden ELU (pro-VLAE); no 'batch_stats' when False.
    output: 'sigmoid' (pro-VLAE, Bernoulli) or 'tanh', see `layers.output_image`.
    bn_axis_name: pmap axis over which BN averages batch statistics in training.
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  image_size: int = 64
  image_channels: int = 3
  batch_norm: bool = True
  output: str = "sigmoid"
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, zs: Sequence[Array], train: bool = False, return_logits: bool = False) -> Array:
    """zs: list of L arrays (B, d_l), bottom first -> image (B, H, W, C) in [-1, 1].

    With `return_logits`, the last transposed convolution's output (the Bernoulli logits).
    """
    c, f = self.channels
    top = len(self.z_dims) - 1
    g = None
    for l in range(top, -1, -1):
      s = self.image_size // 2 ** (l + 2)
      u = self._block("dense", f, f"gen{l}_fc0")(zs[l], train)
      u = self._block("dense", s * s * c, f"gen{l}_fc1")(u, train).reshape(-1, s, s, c)
      if g is not None:
        u = jnp.concatenate([u, g], axis=-1)
      g = self._block("conv_t", c, f"gen{l}_up")(u, train)
    logits = conv_transpose(self.image_channels, 4, 2, "to_image")(g)
    return output_image(logits, self.output, return_logits)


def check(config) -> list[tuple[str, str]]:
  """(field, message) for each config value the 'provlae' family cannot take."""
  m, d = config.model, config.data
  problems = common_problems(config, "provlae")
  num_layers = len(m.z_dims)
  if num_layers < 1:
    problems.append(("model.z_dims", f"'provlae' needs at least one latent layer; got "
                     f"{tuple(m.z_dims)}."))
  if len(m.channels) != 2:
    problems.append(("model.channels", f"'provlae' takes 2 widths (conv width, dense width), e.g. "
                     f"pro-VLAE's (32, 256); got {len(m.channels)}: {tuple(m.channels)}."))
  factor = 2 ** (num_layers + 1)
  if d.image_size % factor:
    problems.append(("data.image_size", f"{d.image_size} cannot be produced by a {num_layers}-layer "
                     f"'provlae' generator: it must be a multiple of 2**(L+1) = {factor}, e.g. 64."))
  return problems


def build(config, output: str):
  """(ProEncoder, ProGenerator) from `config.model` / `config.data`; `output` is the generator's."""
  m, d = config.model, config.data
  common = dict(z_dims=tuple(m.z_dims), channels=tuple(m.channels), batch_norm=bool(m.batch_norm))
  return ProEncoder(**common), ProGenerator(image_size=d.image_size, image_channels=d.channels,
                                            output=output, **common)
