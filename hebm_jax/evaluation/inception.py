"""pytorch-fid's FID Inception-v3 in Flax Linen (NHWC), returning the 2048-d pool3 features.

The authors compute FID with a vendored pytorch-fid (`mseitzer/pytorch-fid`,
`src/pytorch_fid/inception.py`): `InceptionV3(output_blocks=[3], resize_input=True,
normalize_input=True, use_fid_inception=True)`, i.e. the TF Inception graph of 2015-12-05 ported to
PyTorch (weights `pt_inception-2015-12-05-6726825d.pth`). This module is that network:

  * torchvision's `Inception3` trunk (`Conv2d_1a_3x3` ... `Mixed_7c`); every conv is a
    `BasicConv2d` = Conv2d without bias -> BatchNorm2d(eps=0.001) -> ReLU. BatchNorm is used in
    inference mode only (running statistics, `use_running_average=True`).
  * pytorch-fid's patches: `Mixed_5b/5c/5d` (FIDInceptionA), `Mixed_6b..6e` (FIDInceptionC) and
    `Mixed_7b` (FIDInceptionE_1) average-pool their pool branch with `count_include_pad=False`
    (TF's pooling ignores the padding); `Mixed_7c` (FIDInceptionE_2) max-pools there instead
    (3x3, stride 1, pad 1), as the TF graph does. `Mixed_6a` and `Mixed_7a` are torchvision's
    InceptionB / InceptionD unchanged.
  * Input: bilinear resize to 299x299 (`F.interpolate(..., align_corners=False)` there,
    `jax.image.resize(..., 'bilinear', antialias=False)` here), then the blocks; output the global
    average pool of `Mixed_7c`, (B, 2048). The fc layer (1008 classes) is not built: its weights in
    the state dict are ignored.

Input range: pytorch-fid takes images in [0, 1] and maps them to [-1, 1] by 2x - 1 after the
resize; this module takes [-1, 1] directly (the hebm-jax data and generator range). Bilinear
resizing is affine with weights summing to one, so the order of the two steps does not matter.

Resizing: both sample at half-pixel centres with the triangle (tent) kernel of width 1 in input
pixels, without antialiasing when downsampling; at the border torch clamps the source coordinate
where JAX renormalises over the in-range taps, which gives the same values. The tests check
28/32/64/512 -> 299 against `F.interpolate` (equal to 1.2e-7) and the whole network against a
PyTorch build at 32 and 299 (5e-7 relative). What remains is float32 round-off.

Precision: convolutions run at `precision='highest'` by default so that GPUs do not switch to
TF32/bf16 passes; the result then matches a float32 CPU computation. Pass another precision to
`feature_fn` to trade this for speed.

Weights: none can be downloaded from this code. Get `pt_inception-2015-12-05-6726825d.pth` from
pytorch-fid's release (`FID_WEIGHTS_URL`), convert it once with

  python -m hebm_jax.evaluation.inception --convert pt_inception-2015-12-05-6726825d.pth \
      fid_inception.npz

and pass the `.npz` to `load_weights` (the `.pth` itself also works where torch is installed).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import linen as nn

Array = jax.Array
Variables = dict[str, Any]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILE)
CONVERT_COMMAND = "python -m hebm_jax.evaluation.inception --convert SRC.pth DST.npz"
INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3  # torchvision's BasicConv2d (TF's batch-norm epsilon)
# For `fid.save_statistics(implementation=...)`, so that numbers state how they were made.
IMPLEMENTATION = (f"hebm_jax FIDInceptionV3 (port of pytorch-fid's FID Inception, weights "
                  f"{FID_WEIGHTS_FILE}), pool3 {FEATURE_DIM}-d, bilinear resize to {INPUT_SIZE}")

# Keys of pytorch-fid's state dict that the pool3 features do not use.
_IGNORED_TORCH_KEYS = ("fc.weight", "fc.bias")
_NPZ_FORMAT_KEY = "__hebm_jax_fid_inception__"
_NPZ_FORMAT = "1"

# ------------------------------------------------------------------------------------------------
# The network.
# ------------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: Conv (no bias) -> BatchNorm (eps 1e-3, running stats) -> ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


class _Block(nn.Module):
  """Shared helper for the Inception blocks: named BasicConv2d layers as in torchvision."""
  precision: Any = None

  def conv(self, name: str, features: int, kernel_size: int | tuple[int, int], strides: int = 1,
           padding: int | tuple[int, int] = 0) -> BasicConv2d:
    if isinstance(kernel_size, int):
      kernel_size = (kernel_size, kernel_size)
    if isinstance(padding, int):
      padding = (padding, padding)
    return BasicConv2d(features, kernel_size, strides, padding, self.precision, name=name)


def _avg_pool_3x3(x: Array) -> Array:
  # TF's (and pytorch-fid's patched) average pool divides by the number of real pixels.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x: Array) -> Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(_Block):
  """Mixed_5b/5c/5d (pytorch-fid's FIDInceptionA): (B, 35, 35, C) -> (B, 35, 35, 224 + pool)."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = self.conv("branch1x1", 64, 1)(x)
    b5 = self.conv("branch5x5_1", 48, 1)(x)
    b5 = self.conv("branch5x5_2", 64, 5, padding=2)(b5)
    b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
    b3 = self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3)
    b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(b3)
    bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a (torchvision's InceptionB): (B, 35, 35, 288) -> (B, 17, 17, 768)."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = self.conv("branch3x3", 384, 3, strides=2)(x)
    bd = self.conv("branch3x3dbl_1", 64, 1)(x)
    bd = self.conv("branch3x3dbl_2", 96, 3, padding=1)(bd)
    bd = self.conv("branch3x3dbl_3", 96, 3, strides=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Block):
  """Mixed_6b..6e (pytorch-fid's FIDInceptionC): (B, 17, 17, 768) -> (B, 17, 17, 768)."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, 1)(x)
    b7 = self.conv("branch7x7_1", c7, 1)(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7, 1)(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
    bp = self.conv("branch_pool", 192, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a (torchvision's InceptionD): (B, 17, 17, 768) -> (B, 8, 8, 1280)."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = self.conv("branch3x3_1", 192, 1)(x)
    b3 = self.conv("branch3x3_2", 320, 3, strides=2)(b3)
    b7 = self.conv("branch7x7x3_1", 192, 1)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, 3, strides=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Block):
  """Mixed_7b / 7c (FIDInceptionE_1 / _2): (B, 8, 8, C) -> (B, 8, 8, 2048).

  `pool` is 'avg' (count_include_pad=False) for Mixed_7b and 'max' for Mixed_7c: the TF graph
  max-pools there, unlike the Inception paper and torchvision.
  """
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = self.conv("branch1x1", 320, 1)(x)
    b3 = self.conv("branch3x3_1", 384, 1)(x)
    b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                          self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
    bd = self.conv("branch3x3dbl_1", 448, 1)(x)
    bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(bd)
    bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                          self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    elif self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}.")
    bp = self.conv("branch_pool", 192, 1)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(_Block):
  """pytorch-fid's FID Inception-v3 up to pool3.

  Attributes:
    resize_input: resize to 299x299 first (pytorch-fid's `resize_input=True`); without it the
      network runs on the given size (at least 75x75).
    precision: convolution precision (None = JAX's default; `feature_fn` passes 'highest').
  """
  resize_input: bool = True

  @nn.compact
  def __call__(self, images: Array) -> Array:
    """Pool3 features.

    Args:
      images: (B, H, W, 3) in [-1, 1], any H, W.

    Returns:
      (B, 2048) float32, non-negative (average of post-ReLU maps).
    """
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"images must be (B, H, W, 3); got {x.shape}.")
    if self.resize_input and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), method="bilinear",
                           antialias=False)
    x = self.conv("Conv2d_1a_3x3", 32, 3, strides=2)(x)      # 149 x 149 x 32
    x = self.conv("Conv2d_2a_3x3", 32, 3)(x)                 # 147 x 147 x 32
    x = self.conv("Conv2d_2b_3x3", 64, 3, padding=1)(x)      # 147 x 147 x 64
    x = _max_pool_3x3_s2(x)                                  # 73 x 73 x 64
    x = self.conv("Conv2d_3b_1x1", 80, 1)(x)                 # 73 x 73 x 80
    x = self.conv("Conv2d_4a_3x3", 192, 3)(x)                # 71 x 71 x 192
    x = _max_pool_3x3_s2(x)                                  # 35 x 35 x 192
    p = self.precision
    x = InceptionA(p, pool_features=32, name="Mixed_5b")(x)  # 35 x 35 x 256
    x = InceptionA(p, pool_features=64, name="Mixed_5c")(x)  # 35 x 35 x 288
    x = InceptionA(p, pool_features=64, name="Mixed_5d")(x)  # 35 x 35 x 288
    x = InceptionB(p, name="Mixed_6a")(x)                    # 17 x 17 x 768
    x = InceptionC(p, channels_7x7=128, name="Mixed_6b")(x)
    x = InceptionC(p, channels_7x7=160, name="Mixed_6c")(x)
    x = InceptionC(p, channels_7x7=160, name="Mixed_6d")(x)
    x = InceptionC(p, channels_7x7=192, name="Mixed_6e")(x)  # 17 x 17 x 768
    x = InceptionD(p, name="Mixed_7a")(x)                    # 8 x 8 x 1280
    x = InceptionE(p, pool="avg", name="Mixed_7b")(x)        # 8 x 8 x 2048
    x = InceptionE(p, pool="max", name="Mixed_7c")(x)        # 8 x 8 x 2048
    return jnp.mean(x, axis=(1, 2))


# ------------------------------------------------------------------------------------------------
# Variables: random, converted from pytorch-fid's state dict, saved/loaded as .npz.
# ------------------------------------------------------------------------------------------------


def init_random(key: Array) -> Variables:
  """Random variables: He-normal conv kernels, BatchNorm as identity (for tests and benchmarks).

  Args:
    key: a JAX PRNG key.

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays, shaped as `load_weights` returns.
  """
  flat = _flat(_abstract_variables())
  kernels = [p for p in flat if p[-1] == "kernel"]
  # One draw for all kernels: per-leaf jax.random calls would each compile (and flax's own init,
  # jitted, spends ~45 s on this CPU in the truncated-normal sampler).
  noise = np.asarray(jax.random.normal(key, (sum(flat[p].size for p in kernels),), jnp.float32))
  out, start = {}, 0
  for path, leaf in flat.items():
    if path[-1] == "kernel":
      h, w, i, _ = leaf.shape
      # He-normal keeps activations O(1) through the ~94 conv layers.
      std = float(np.sqrt(2.0 / (h * w * i)))
      out[path] = noise[start:start + leaf.size].reshape(leaf.shape) * std
      start += leaf.size
    elif path[-1] in ("scale", "var"):
      out[path] = np.ones(leaf.shape, np.float32)
    else:  # BN bias and running mean
      out[path] = np.zeros(leaf.shape, np.float32)
  return _unflat(out)


@functools.lru_cache(maxsize=1)
def _abstract_variables() -> Variables:
  """The variables' shapes and dtypes, from tracing `init` (no computation)."""
  return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))


def _flat(tree: Mapping) -> dict[tuple[str, ...], Any]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[tuple(k.key for k in path)] = leaf
  return out


def _unflat(flat: Mapping[tuple[str, ...], Any]) -> Variables:
  out: dict = {}
  for path, leaf in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = leaf
  return out


# (Flax module, leaf) -> the torch state-dict suffix.
_LEAF_TO_TORCH = {("conv", "kernel"): "weight", ("bn", "scale"): "weight", ("bn", "bias"): "bias",
                  ("bn", "mean"): "running_mean", ("bn", "var"): "running_var"}


def _torch_key(path: tuple[str, ...]) -> str:
  """('params', 'Mixed_5b', 'branch1x1', 'conv', 'kernel') -> 'Mixed_5b.branch1x1.conv.weight'."""
  return ".".join(path[1:-1] + (_LEAF_TO_TORCH[path[-2:]],))


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  if path[-1] == "kernel":  # HWIO -> OIHW
    h, w, i, o = shape
    return (o, i, h, w)
  return tuple(shape)


def expected_torch_shapes() -> dict[str, tuple[int, ...]]:
  """The state-dict keys (without fc and num_batches_tracked) and shapes the converter expects."""
  return {_torch_key(p): _torch_shape(p, leaf.shape)
          for p, leaf in _flat(_abstract_variables()).items()}


def _summarise(kind: str, items: list[str], limit: int = 8) -> str:
  more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
  return f"{len(items)} {kind}: {', '.join(items[:limit])}{more}"


def convert_torch_state_dict(state_dict: Mapping[str, Any]) -> Variables:
  """pytorch-fid's FID Inception state dict -> this module's variables.

  Conv weights (O, I, kh, kw) become HWIO kernels; BatchNorm weight/bias/running_mean/running_var
  become params scale/bias and batch_stats mean/var. `fc.weight`/`fc.bias` (the unused 1008-class
  head) and `*.num_batches_tracked` are ignored.

  Args:
    state_dict: key -> numpy array (or anything `np.asarray` takes, e.g. a CPU torch tensor), keys
      as in `pt_inception-2015-12-05-6726825d.pth` (e.g. 'Mixed_5b.branch1x1.conv.weight').

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays.

  Raises:
    ValueError: naming the missing and unexpected keys and the arrays of the wrong shape.
  """
  flat = {}
  missing, mismatched = [], []
  for path, leaf in _flat(_abstract_variables()).items():
    key = _torch_key(path)
    if key not in state_dict:
      missing.append(key)
      continue
    value = np.asarray(state_dict[key], np.float32)
    want = _torch_shape(path, leaf.shape)
    if value.shape != want:
      mismatched.append(f"{key} {value.shape} (expected {want})")
      continue
    flat[path] = value.transpose(2, 3, 1, 0) if path[-1] == "kernel" else value
  expected = set(expected_torch_shapes())
  unexpected = sorted(k for k in state_dict if k not in expected and k not in _IGNORED_TORCH_KEYS
                      and not k.endswith(".num_batches_tracked"))
  if missing or unexpected or mismatched:
    problems = [_summarise(kind, items) for kind, items in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches", mismatched)) if items]
    raise ValueError("Not pytorch-fid's FID Inception state dict "
                     f"({FID_WEIGHTS_FILE}): " + "; ".join(problems) + ".")
  return _unflat(flat)


def save_converted(variables: Mapping, path: str | os.PathLike) -> None:
  """Writes variables as the `.npz` that `load_weights` reads ('params/Mixed_5b/.../kernel')."""
  arrays = {"/".join(p): np.asarray(v, np.float32) for p, v in _flat(variables).items()}
  arrays[_NPZ_FORMAT_KEY] = np.asarray(_NPZ_FORMAT)
  with open(path, "wb") as f:  # a file object keeps np.savez from appending '.npz'
    np.savez(f, **arrays)


def _load_npz(path: str) -> Variables:
  with np.load(path, allow_pickle=False) as f:
    if _NPZ_FORMAT_KEY not in f.files:
      raise ValueError(f"{path} was not written by hebm_jax.evaluation.inception.save_converted "
                       f"(no '{_NPZ_FORMAT_KEY}' entry); convert the .pth with "
                       f"`{CONVERT_COMMAND}`.")
    flat = {tuple(k.split("/")): f[k] for k in f.files if k != _NPZ_FORMAT_KEY}
  want = {p: leaf.shape for p, leaf in _flat(_abstract_variables()).items()}
  missing = sorted("/".join(p) for p in want.keys() - flat.keys())
  unexpected = sorted("/".join(p) for p in flat.keys() - want.keys())
  mismatched = sorted(f"{'/'.join(p)} {flat[p].shape} (expected {want[p]})"
                      for p in want.keys() & flat.keys() if flat[p].shape != want[p])
  if missing or unexpected or mismatched:
    problems = [_summarise(kind, items) for kind, items in
                (("missing arrays", missing), ("unexpected arrays", unexpected),
                 ("shape mismatches", mismatched)) if items]
    raise ValueError(f"{path} does not hold FID Inception variables: " + "; ".join(problems) + ".")
  return _unflat(flat)


def _missing_weights_message(path: str) -> str:
  dst = path if path.endswith(".npz") else "fid_inception.npz"
  return (f"No FID Inception weights at {path}. FID/KID use pytorch-fid's Inception weights, the "
          f"file {FID_WEIGHTS_FILE}, from {FID_WEIGHTS_URL} (download it on a machine with "
          "internet access; nothing here downloads it). Convert it once to the .npz this loader "
          "prefers (needs torch; the CPU build is enough):\n"
          f"  python -m hebm_jax.evaluation.inception --convert {FID_WEIGHTS_FILE} {dst}\n"
          "or pass the .pth itself where torch is installed.")


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `.pth` state dict (needs torch) as float32 numpy arrays."""
  path = os.fspath(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"Reading {path} needs torch, which hebm-jax does not otherwise use: `pip install torch` "
        f"(the CPU build is enough), or run `{CONVERT_COMMAND}` on a machine that has it and "
        "pass the .npz.") from e
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state_dict, Mapping):
    raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict.")
  return {k: v.detach().to(torch.float32).numpy() for k, v in state_dict.items()
          if isinstance(v, torch.Tensor) and torch.is_floating_point(v)}


def load_weights(path: str | os.PathLike) -> Variables:
  """FID Inception variables from a converted `.npz` or, with torch installed, the `.pth`.

  A `.pth` is converted on every call (and a log line says so); convert it once with
  `python -m hebm_jax.evaluation.inception --convert SRC.pth DST.npz` to skip torch.

  Args:
    path: `.npz` written by `save_converted`, or pytorch-fid's
      `pt_inception-2015-12-05-6726825d.pth`.

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays.

  Raises:
    FileNotFoundError: no such file; the message names the weight file, its URL and the convert
      command.
    ImportError: a `.pth` without torch installed.
    ValueError: the file does not hold these variables (names the offending keys).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(_missing_weights_message(path))
  if path.endswith(".npz"):
    return _load_npz(path)
  logging.info("Converting the PyTorch FID Inception weights %s on the fly; `%s` saves a .npz "
               "that loads without torch.", path, CONVERT_COMMAND)
  return convert_torch_state_dict(load_torch_state_dict(path))


def num_params(variables: Mapping) -> int:
  """Number of trainable parameters (the 'params' collection), as torch's `parameters()`."""
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"])))


# ------------------------------------------------------------------------------------------------
# Feature extraction.
# ------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("precision",))
def _pool3(variables: Variables, images: Array, precision: Any) -> Array:
  return FIDInceptionV3(precision=precision).apply(variables, images)


def feature_fn(variables: Mapping, precision: Any = "highest"
               ) -> Callable[[Array], Array]:
  """A jitted images -> pool3 features function with the variables on the device.

  Grayscale (C = 1) images are repeated to three channels, as pytorch-fid does for MNIST-like
  data: its image loader calls PIL's `convert('RGB')`, which copies the gray value into R, G, B.
  The repeat happens before the jitted call, so gray and RGB batches of one size share one
  compilation.

  Args:
    variables: from `load_weights`, `convert_torch_state_dict` or `init_random`.
    precision: convolution precision ('highest' keeps float32 on GPUs; None = JAX's default).

  Returns:
    fn(images (B, H, W, C) in [-1, 1], C in {1, 3}) -> (B, 2048) float32 device array. Each new
    (B, H, W) compiles once.
  """
  variables = jax.device_put(jax.tree.map(jnp.asarray, dict(variables)))

  def fn(images: Array) -> Array:
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"images must be (B, H, W, 1 or 3) in [-1, 1]; got {images.shape}.")
    if images.shape[-1] == 1:
      images = jnp.repeat(images, 3, axis=-1)
    return _pool3(variables, images, precision)

  return fn


# ------------------------------------------------------------------------------------------------
# Command line: python -m hebm_jax.evaluation.inception --convert SRC.pth DST.npz
# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m hebm_jax.evaluation.inception",
      description=f"Convert pytorch-fid's {FID_WEIGHTS_FILE} ({FID_WEIGHTS_URL}) to the .npz "
                  "that hebm_jax.evaluation.inception.load_weights reads without torch.")
  parser.add_argument("--convert", nargs=2, metavar=("SRC.pth", "DST.npz"), required=True)
  args = parser.parse_args(argv)
  src, dst = args.convert
  if not os.path.exists(src):
    parser.error(_missing_weights_message(src))
  if not dst.endswith(".npz"):
    parser.error(f"DST must end in .npz (load_weights picks the format by it); got {dst}.")
  variables = convert_torch_state_dict(load_torch_state_dict(src))
  save_converted(variables, dst)
  print(f"Wrote {dst}: {num_params(variables):,} parameters of the FID Inception "
        f"(pool3, {FEATURE_DIM}-d).")
  return 0


if __name__ == "__main__":
  sys.exit(main())
