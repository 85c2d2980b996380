"""VLAE ladder networks (Zhao, Song, Ermon 2017; REFERENCE Sec. 6.1), in NHWC, for the joint-prior model.

The paper reuses VLAE's networks for MNIST / Fashion-MNIST and CelebA (REFERENCE Sec. 4). Two
families, each an (encoder, generator) pair with the interface of `registry`:

* 'vlae_small' (`SmallEncoder`, `SmallGenerator`): VLAE's `SmallLayers` (MNIST 28x28), generalised
  to L >= 2 layers: only layer 0 sees convolutions, the layers above are fully connected, and the
  generator merges each lower code with VLAE's gated addition.
* 'vlae_large' (`LargeEncoder`, `LargeGenerator`): VLAE's `LargeLayers` (CelebA 64x64), four
  layers, generalised to any widths and any image size divisible by 16; the generator merges each
  lower code by channel concatenation (`LargeLayers.combine_noise` is hard-wired to 'concat').

Departures from the VLAE code, shared by both families (and by `provlae`):

* Heads: `layers.GaussianHead`, by default a mean and an unconstrained log-variance as the
  authors' model; `model.std_head='sigmoid'` gives VLAE's `sigmoid(fc) + 0.001` standard
  deviation (not `LargeLayers.ladder3`'s ReLU heads, a quirk of tf.contrib's default activation).
* Initialisation: PyTorch's (`torch_dense`, xavier-normal `conv` / `conv_transpose`) as the rest of
  the package, instead of N(0, 0.02). Convolutions are bias-free, as in the authors' networks: with
  batch norm a bias would be cancelled anyway, and without it the model keeps the authors' choice.
  The last (image) layer is bias-free too. Dense layers keep their bias.
* Activations: LeakyReLU everywhere, slope `model.encoder_negative_slope` in the encoder and
  `model.generator_negative_slope` in the generator. VLAE uses lrelu 0.1 in the encoder and its
  transposed convolutions and ReLU in its generator's fc layers; the experiment configs choose.
* Batch norm is a flag (`batch_norm`). When on, it follows VLAE: linear -> BN -> activation, BN with
  a learned offset and no scale (tf.contrib's default), on every hidden conv/fc except the
  identity fc layers, the heads and the image layer. `MaybeBatchNorm`'s momentum 0.99 replaces
  tf.contrib's 0.999 decay. `bn_axis_name` averages batch statistics over a pmap axis.
* Reconstruction target and output range are the trainer's: the generator returns logits through
  `layers.output_image` ('tanh' or 'sigmoid' rescaled to [-1, 1]).

Layer index 0 is the bottom (finest) latent, index L-1 the top one. Module names follow VLAE's
functions: `ladder{l}_*` (inference heads), `trunk{l}_*` (VLAE's `inference{l}`, the shared
bottom-up path) and `gen{l}_*` (`generative{l}`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hebm_jax.models.layers import (GaussianHead, MaybeBatchNorm, activation_fn, conv, conv_transpose,
                                    output_image, torch_dense)

Array = jax.Array

GATE_INIT = 0.1  # VLAE's `combine_noise(method='gated_add')` initial gate


class Block(nn.Module):
  """One hidden layer: a linear map, optional batch norm and an activation.

  Attributes:
    kind: 'dense' (`torch_dense`), 'conv' (`layers.conv`) or 'conv_t' (`layers.conv_transpose`).
    features: output width / channels.
    kernel, stride, padding: conv geometry (PyTorch semantics); ignored by 'dense'.
    activation: a `layers.ACTIVATIONS` name; negative_slope: its slope for 'leaky_relu'.
    batch_norm: whether to normalise; bn_axis_name: pmap axis of the batch statistics.
    bn_after_activation: False: linear -> BN -> act (VLAE); True: linear -> act -> BN (pro-VLAE).
    bn_scale: whether BN learns a scale (tf.layers' default, pro-VLAE) or only an offset (VLAE).
  """
  kind: str
  features: int
  kernel: int = 4
  stride: int = 2
  padding: int = 1
  activation: str = "leaky_relu"
  negative_slope: float = 0.1
  batch_norm: bool = False
  bn_axis_name: str | None = None
  bn_after_activation: bool = False
  bn_scale: bool = False

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    if self.kind == "dense":
      h = torch_dense(self.features, x.shape[-1], "fc")(x)
    elif self.kind == "conv":
      h = conv(self.features, self.kernel, self.stride, "conv", self.padding)(x)
    elif self.kind == "conv_t":
      h = conv_transpose(self.features, self.kernel, self.stride, "conv_t", self.padding)(x)
    else:
      raise ValueError(f"Unknown block kind {self.kind!r}; expected 'dense', 'conv' or 'conv_t'.")
    norm = MaybeBatchNorm(enabled=self.batch_norm, use_scale=self.bn_scale,
                          axis_name=self.bn_axis_name, name="norm")
    act = activation_fn(self.activation, self.negative_slope)
    if self.bn_after_activation:
      return norm(act(h), train)
    return act(norm(h, train))


def _flat(h: Array) -> Array:
  return h.reshape(h.shape[0], -1)


class _VLAEModule(nn.Module):
  """Attributes common to the VLAE encoders and generators (see the module docstring)."""

  def _block(self, kind: str, features: int, name: str, kernel: int = 4, stride: int = 2,
             padding: int = 1) -> Block:
    return Block(kind, features, kernel, stride, padding, activation="leaky_relu",
                 negative_slope=self.negative_slope, batch_norm=self.batch_norm,
                 bn_axis_name=self.bn_axis_name, name=name)


# --------------------------------------------------------------------------------------------------
# 'vlae_small': VLAE SmallLayers


class SmallEncoder(_VLAEModule):
  """VLAE `SmallLayers` inference network, generalised to L >= 2 layers.

  With channels = (c1, c2, f) (VLAE MNIST: (64, 128, 1024)) and B = BN (if on) + LeakyReLU:

      ladder0(x): conv k4 s2 p1 c1 B -> conv k4 s2 p1 c2 B -> flatten ((H/4)^2 c2) -> head(d_0)
      trunk0(x):  conv k4 s2 p1 c1 B -> conv k4 s2 p1 c2 B -> flatten -> fc f           = h_1
      ladder_l(h_l), 1 <= l <= L-1: fc f B -> fc f B -> head(d_l)
      trunk_l(h_l),  1 <= l <= L-2: fc f B -> fc f B -> fc f                         = h_{l+1}

  The trunk's last fc of each stage is linear (no BN, no activation), as in VLAE. The input height
  must be divisible by 4 (28 -> 14 -> 7).

  Attributes:
    z_dims: latent size per layer, bottom first (length L >= 2).
    channels: (c1, c2, f): the two conv widths and the fc width.
    batch_norm: BN before every hidden activation (VLAE); no 'batch_stats' when False.
    negative_slope: LeakyReLU slope (`model.encoder_negative_slope`; VLAE: 0.1).
    bn_axis_name: pmap axis over which BN averages batch statistics in training.
    std_head: `layers.GaussianHead`'s parameterisation (`model.std_head`; VLAE: 'sigmoid').
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  batch_norm: bool = False
  negative_slope: float = 0.1
  bn_axis_name: str | None = None
  std_head: str = "logvar"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[list[Array], list[Array]]:
    """x: (B, H, W, C) in [-1, 1] -> (means, logvars), lists of L arrays (B, d_l)."""
    c1, c2, f = self.channels
    num_layers = len(self.z_dims)
    means, logvars = [], []

    def add_head(l, h):
      mean, logvar = GaussianHead(self.z_dims[l], self.std_head, name=f"head{l}")(h)
      means.append(mean)
      logvars.append(logvar)

    h = self._block("conv", c1, "ladder0_conv0")(x, train)
    h = self._block("conv", c2, "ladder0_conv1")(h, train)
    add_head(0, h)

    r = self._block("conv", c1, "trunk0_conv0")(x, train)
    r = self._block("conv", c2, "trunk0_conv1")(r, train)
    r = torch_dense(f, r[0].size, "trunk0_fc")(_flat(r))
    for l in range(1, num_layers):
      h = self._block("dense", f, f"ladder{l}_fc0")(r, train)
      h = self._block("dense", f, f"ladder{l}_fc1")(h, train)
      add_head(l, h)
      if l < num_layers - 1:
        r = self._block("dense", f, f"trunk{l}_fc0")(r, train)
        r = self._block("dense", f, f"trunk{l}_fc1")(r, train)
        r = torch_dense(f, f, f"trunk{l}_fc2")(r)
    return means, logvars


class SmallGenerator(_VLAEModule):
  """VLAE `SmallLayers` generative network, generalised to L >= 2 layers.

  With channels = (c1, c2, f), s = image_size / 4 and B = BN (if on) + LeakyReLU:

      gen_{L-1}(z_{L-1}):   fc f B -> fc f B -> fc f                                   = h
      gen_l(h, z_l), 1 <= l <= L-2: h + gate_l * B(fc f (z_l)) -> fc f B -> fc f B -> fc f = h
      gen_0(h, z_0): h + gate_0 * B(fc f (z_0)) -> fc s*s*c2 B -> reshape (s, s, c2)
                     -> convT k4 s2 p1 c1 B -> convT k4 s2 p1 image_channels       = logits

  `gate_l` is VLAE's learnable gate of `combine_noise(method='gated_add')`: one weight per unit of
  h (shape (f,), as VLAE's `latent.get_shape()[1:]`), initialised to 0.1.

  Attributes:
    z_dims: latent size per layer, bottom first (length L >= 2).
    channels: (c1, c2, f), as the encoder's.
    image_size: output height = width, divisible by 4.
    image_channels: output channels.
    batch_norm: BN before every hidden activation (VLAE); no 'batch_stats' when False.
    negative_slope: LeakyReLU slope (`model.generator_negative_slope`; VLAE: ReLU in its fc
      layers, lrelu 0.1 in its transposed convolutions).
    output: 'tanh' or 'sigmoid' (VLAE's), see `layers.output_image`.
    bn_axis_name: pmap axis over which BN averages batch statistics in training.
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  image_size: int = 28
  image_channels: int = 1
  batch_norm: bool = False
  negative_slope: float = 0.0
  output: str = "tanh"
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, zs: Sequence[Array], train: bool = False, return_logits: bool = False) -> Array:
    """zs: list of L arrays (B, d_l), bottom first -> image (B, H, W, C) in [-1, 1].

    With `return_logits`, the last pre-activation map instead (Bernoulli logits for 'sigmoid').
    """
    c1, c2, f = self.channels
    top = len(self.z_dims) - 1

    def fc_stack(l, h):
      h = self._block("dense", f, f"gen{l}_fc0")(h, train)
      h = self._block("dense", f, f"gen{l}_fc1")(h, train)
      return torch_dense(f, f, f"gen{l}_fc2")(h)

    h = fc_stack(top, zs[top])
    for l in range(top - 1, -1, -1):
      code = self._block("dense", f, f"gen{l}_inject")(zs[l], train)
      gate = self.param(f"gen{l}_gate", nn.initializers.constant(GATE_INIT), (f,))
      h = h + gate * code
      if l > 0:
        h = fc_stack(l, h)
    s = self.image_size // 4
    h = self._block("dense", s * s * c2, "gen0_fc")(h, train).reshape(-1, s, s, c2)
    h = self._block("conv_t", c1, "gen0_up0")(h, train)
    logits = conv_transpose(self.image_channels, 4, 2, "gen0_up1")(h)
    return output_image(logits, self.output, return_logits)


# --------------------------------------------------------------------------------------------------
# 'vlae_large': VLAE LargeLayers


class LargeEncoder(_VLAEModule):
  """VLAE `LargeLayers` inference network (4 layers), for any image size divisible by 16.

  With channels = (c1, c2, c3, c4, c5) (VLAE CelebA: (64, 128, 256, 512, 1024)), H the input
  size, "down" = conv k4 s2 p1, "keep" = conv k3 s1 p1, each followed by B = BN (if on) + LeakyReLU:

      ladder0(x):   down c1 -> keep c1                           [H/2]  -> flatten -> head(d_0)
      trunk0(x):    down c1 -> keep c1                           [H/2]  = h_1
      ladder1(h_1): down c2 -> keep c2 -> down c3                [H/8]  -> flatten -> head(d_1)
      trunk1(h_1):  down c2 -> keep c2 -> down c3                [H/8]  = h_2
      ladder2(h_2): keep c3 -> down c4 -> keep c4                [H/16] -> flatten -> head(d_2)
      trunk2(h_2):  keep c3 -> down c4 -> keep c4                [H/16] = h_3
      ladder3(h_3): flatten -> fc c5 B -> fc c5 B -> head(d_3)

  VLAE's size-keeping convs are 4x4 stride 1 with TF 'SAME' padding (asymmetric, 1 before and 2
  after); here they are 3x3/s1/p1, the substitution the authors made when porting VLAE's
  MediumLayers to their SVHN model (REFERENCE 6.1), which keeps PyTorch's symmetric padding.

  Attributes:
    z_dims: latent size per layer, bottom first (length 4).
    channels: (c1, c2, c3, c4, c5): conv widths, then the top fc width.
    batch_norm: BN before every hidden activation (VLAE); no 'batch_stats' when False.
    negative_slope: LeakyReLU slope (`model.encoder_negative_slope`; VLAE: 0.1).
    bn_axis_name: pmap axis over which BN averages batch statistics in training.
    std_head: `layers.GaussianHead`'s parameterisation (`model.std_head`; VLAE: 'sigmoid').
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  batch_norm: bool = False
  negative_slope: float = 0.1
  bn_axis_name: str | None = None
  std_head: str = "logvar"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[list[Array], list[Array]]:
    """x: (B, H, W, C) in [-1, 1] -> (means, logvars), lists of 4 arrays (B, d_l)."""
    c1, c2, c3, c4, c5 = self.channels
    down = lambda c, name: self._block("conv", c, name, 4, 2, 1)
    keep = lambda c, name: self._block("conv", c, name, 3, 1, 1)
    stages = [[(down, c1), (keep, c1)],
              [(down, c2), (keep, c2), (down, c3)],
              [(keep, c3), (down, c4), (keep, c4)]]
    means, logvars = [], []
    r = x
    for l, stage in enumerate(stages):
      h = r
      for j, (make, c) in enumerate(stage):
        h = make(c, f"ladder{l}_conv{j}")(h, train)
      mean, logvar = GaussianHead(self.z_dims[l], self.std_head, name=f"head{l}")(h)
      means.append(mean)
      logvars.append(logvar)
      for j, (make, c) in enumerate(stage):
        r = make(c, f"trunk{l}_conv{j}")(r, train)
    h = _flat(r)
    h = self._block("dense", c5, "ladder3_fc0")(h, train)
    h = self._block("dense", c5, "ladder3_fc1")(h, train)
    mean, logvar = GaussianHead(self.z_dims[3], self.std_head, name="head3")(h)
    means.append(mean)
    logvars.append(logvar)
    return means, logvars


class LargeGenerator(_VLAEModule):
  """VLAE `LargeLayers` generative network (4 layers), for any image size divisible by 16.

  With channels = (c1, ..., c5), H = image_size, s_k = H / k, "up" = convT k4 s2 p1, "keep" =
  convT k3 s1 p1 (VLAE: 4x4 'SAME', see `LargeEncoder`), each followed by B = BN (if on) +
  LeakyReLU, and code_l = reshape(B(fc(z_l)), (s, s, c)) concatenated on the channel axis:

      gen3(z_3):    fc c5 B -> fc c5 B -> fc s_16^2 c4 B -> reshape         [H/16, c4]
      gen2(h, z_2): concat [h, code_2 (c4)] -> keep c4 -> up c3 -> keep c3   [H/8,  c3]
      gen1(h, z_1): concat [h, code_1 (c3)] -> up c2 -> keep c2 -> up c1     [H/2,  c1]
      gen0(h, z_0): concat [h, code_0 (c1)] -> up c1 -> keep image_channels  [H] = logits

  Attributes:
    z_dims: latent size per layer, bottom first (length 4).
    channels: (c1, c2, c3, c4, c5), as the encoder's.
    image_size: output height = width, divisible by 16.
    image_channels: output channels.
    batch_norm: BN before every hidden activation (VLAE); no 'batch_stats' when False.
    negative_slope: LeakyReLU slope (`model.generator_negative_slope`; VLAE: ReLU in its fc
      layers, lrelu 0.1 in its transposed convolutions).
    output: 'tanh' or 'sigmoid' (VLAE's, rescaled to the data range), see `layers.output_image`.
    bn_axis_name: pmap axis over which BN averages batch statistics in training.
  """
  z_dims: Sequence[int]
  channels: Sequence[int]
  image_size: int = 64
  image_channels: int = 3
  batch_norm: bool = False
  negative_slope: float = 0.0
  output: str = "tanh"
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, zs: Sequence[Array], train: bool = False, return_logits: bool = False) -> Array:
    """zs: list of 4 arrays (B, d_l), bottom first -> image (B, H, W, C) in [-1, 1].

    With `return_logits`, the last pre-activation map instead (Bernoulli logits for 'sigmoid').
    """
    c1, c2, c3, c4, c5 = self.channels
    size = self.image_size
    up = lambda c, name: self._block("conv_t", c, name, 4, 2, 1)
    keep = lambda c, name: self._block("conv_t", c, name, 3, 1, 1)

    def code(l, s, c, h):
      u = self._block("dense", s * s * c, f"gen{l}_inject")(zs[l], train).reshape(-1, s, s, c)
      return jnp.concatenate([h, u], axis=-1)

    s = size // 16
    h = self._block("dense", c5, "gen3_fc0")(zs[3], train)
    h = self._block("dense", c5, "gen3_fc1")(h, train)
    h = self._block("dense", s * s * c4, "gen3_fc2")(h, train).reshape(-1, s, s, c4)

    h = code(2, s, c4, h)
    for j, (make, c) in enumerate([(keep, c4), (up, c3), (keep, c3)]):
      h = make(c, f"gen2_conv{j}")(h, train)
    h = code(1, size // 8, c3, h)
    for j, (make, c) in enumerate([(up, c2), (keep, c2), (up, c1)]):
      h = make(c, f"gen1_conv{j}")(h, train)
    h = code(0, size // 2, c1, h)
    h = up(c1, "gen0_conv0")(h, train)
    logits = conv_transpose(self.image_channels, 3, 1, "gen0_conv1", padding=1)(h)
    return output_image(logits, self.output, return_logits)


# --------------------------------------------------------------------------------------------------
# Config checks and builders (registered in `registry.FAMILIES`)


def common_problems(config, family: str) -> list[tuple[str, str]]:
  """Problems every non-ladder family shares: empty latent layers, a `model.top_width` it ignores."""
  m = config.model
  problems = []
  if any(int(d) < 1 for d in m.z_dims):
    problems.append(("model.z_dims", f"every latent layer needs at least one unit, got "
                     f"{tuple(m.z_dims)}."))
  if m.top_width:
    problems.append(("model.top_width", f"{m.top_width} is not read by the {family!r} family (only "
                     "'hs'/'fid' have a separate top width); set it to 0."))
  return problems


def check_small(config) -> list[tuple[str, str]]:
  """(field, message) for each config value the 'vlae_small' family cannot take."""
  m, d = config.model, config.data
  problems = common_problems(config, "vlae_small")
  if len(m.z_dims) < 2:
    problems.append(("model.z_dims", f"'vlae_small' needs at least 2 latent layers, got "
                     f"{len(m.z_dims)}: {tuple(m.z_dims)}."))
  if len(m.channels) != 3:
    problems.append(("model.channels", f"'vlae_small' takes 3 widths (conv1, conv2, fc), e.g. VLAE's "
                     f"(64, 128, 1024); got {len(m.channels)}: {tuple(m.channels)}."))
  if d.image_size % 4:
    problems.append(("data.image_size", f"{d.image_size} cannot be produced by 'vlae_small' (two "
                     "stride-2 transposed convolutions): it must be a multiple of 4, e.g. 28."))
  return problems


def check_large(config) -> list[tuple[str, str]]:
  """(field, message) for each config value the 'vlae_large' family cannot take."""
  m, d = config.model, config.data
  problems = common_problems(config, "vlae_large")
  if len(m.z_dims) != 4:
    problems.append(("model.z_dims", f"'vlae_large' (VLAE LargeLayers) has exactly 4 latent layers, "
                     f"got {len(m.z_dims)}: {tuple(m.z_dims)}."))
  if len(m.channels) != 5:
    problems.append(("model.channels", f"'vlae_large' takes 5 widths (c1, c2, c3, c4 conv, c5 fc), "
                     f"e.g. VLAE's (64, 128, 256, 512, 1024); got {len(m.channels)}: "
                     f"{tuple(m.channels)}."))
  if d.image_size % 16:
    problems.append(("data.image_size", f"{d.image_size} cannot be produced by 'vlae_large' (four "
                     "stride-2 transposed convolutions): it must be a multiple of 16, e.g. 64."))
  return problems


def _builder(encoder_cls, generator_cls):
  def build(config, output: str):
    m, d = config.model, config.data
    common = dict(z_dims=tuple(m.z_dims), channels=tuple(m.channels), batch_norm=bool(m.batch_norm))
    encoder = encoder_cls(negative_slope=m.encoder_negative_slope,
                          std_head=m.get("std_head", "logvar"), **common)
    generator = generator_cls(image_size=d.image_size, image_channels=d.channels,
                              negative_slope=m.generator_negative_slope, output=output, **common)
    return encoder, generator
  return build


build_small = _builder(SmallEncoder, SmallGenerator)
build_large = _builder(LargeEncoder, LargeGenerator)
