"""FID and KID on feature sets, as pure numpy functions, plus reference-statistics files.

* FID: `feature_statistics` + `frechet_distance` follow pytorch-fid's `fid_score.py`
  (`calculate_activation_statistics`, `calculate_frechet_distance`): float64 mean and `np.cov`
  (ddof = 1), the Frechet distance with `scipy.linalg.sqrtm`, a 1e-6 diagonal offset when the
  square root of the product is not finite, and the imaginary part of the square root dropped
  when its diagonal is within 1e-3 of zero (an error otherwise). The authors' FID (REFERENCE.md
  section 3.1) is that code on 50,000 pool3 features per side.
* KID (Binkowski et al., 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel
  k(x, y) = (x . y / d + 1)^3, averaged over random subsets, as torch-fidelity's
  `metric_kid.py` (`mmd2(..., mmd_est='unbiased')`) and clean-fid's `kernel_distance` compute it:
  for subsets X, Y of m rows each,
      MMD^2 = [sum_{i!=j} k(x_i, x_j) + sum_{i!=j} k(y_i, y_j)] / (m (m - 1))
              - 2 sum_{i,j} k(x_i, y_j) / m^2.
  Subsets are drawn as torch-fidelity draws them (`np.random.RandomState(seed)`, then
  `choice(n1, m, replace=False)` for the first set and `choice(n2, m, replace=False)` for the
  second, per subset; seed 2020, 100 subsets of 1000 by default), so the same features and seed
  give torch-fidelity's numbers. The std is over subsets with ddof = 0 (`np.std`), as there.
* Reference statistics are `.npz` files with 'mu' and 'sigma' (the keys pytorch-fid reads) and the
  metadata that says what they were computed on.
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
from absl import logging
from scipy import linalg

from hebm_jax import fileio


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of features in float64, as pytorch-fid.

  Args:
    features: (N, D), N >= 2.

  Returns:
    mu (D,), sigma (D, D) = np.cov(features, rowvar=False) (ddof = 1).
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"features must be (N, D) with N >= 2; got {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid computes it.

  d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)).

  Args:
    mu1, mu2: (D,) means.
    sigma1, sigma2: (D, D) covariances.
    eps: added to both diagonals when sqrtm(sigma1 sigma2) is not finite (near-singular product).

  Returns:
    The distance (FID when the inputs are Inception pool3 statistics).

  Raises:
    ValueError: shapes disagree, or the square root has an imaginary diagonal above 1e-3.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape:
    raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}.")
  if sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"covariances {sigma1.shape}, {sigma2.shape} do not fit means {mu1.shape}.")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("FID: singular product of covariances; adding %g to their diagonals.", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  # Round-off can leave a small imaginary part; a large one means the statistics are broken.
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"FID: sqrtm(sigma1 sigma2) has an imaginary component of up to "
                       f"{np.max(np.abs(covmean.imag))}.")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 of (m, d) x and y with k(a, b) = (a . b / d + 1)^3."""
  m, d = x.shape
  k_xx = (x @ x.T / d + 1.0) ** 3
  k_yy = (y @ y.T / d + 1.0) ** 3
  k_xy = (x @ y.T / d + 1.0) ** 3
  within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
  return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(features1: Any, features2: Any, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 2020
                              ) -> tuple[float, float]:
  """KID: the unbiased polynomial-kernel MMD^2 averaged over random subsets.

  Costs 3 * num_subsets products of (m, D) x (D, m) in float64 (m = subset size): about 25 s on
  2 CPU cores for the defaults at D = 2048.

  Args:
    features1: (N1, D), e.g. pool3 features of generated images.
    features2: (N2, D), e.g. of real images.
    num_subsets: number of random subset pairs.
    subset_size: rows per subset, clipped to min(N1, N2) (torch-fidelity refuses instead).
    seed: seed of the `np.random.RandomState` that draws the subsets (torch-fidelity's default).

  Returns:
    (mean, std) of the per-subset MMD^2 estimates (std with ddof = 0).
  """
  f1 = np.asarray(features1, np.float64)
  f2 = np.asarray(features2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"features must be (N1, D) and (N2, D); got {f1.shape} and {f2.shape}.")
  m = min(subset_size, f1.shape[0], f2.shape[0])
  if m < 2:
    raise ValueError(f"KID needs subsets of at least 2 rows; got {m} (sets of {f1.shape[0]} and "
                     f"{f2.shape[0]}, subset_size={subset_size}).")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be positive; got {num_subsets}.")
  rng = np.random.RandomState(seed)
  mmds = np.empty(num_subsets)
  for i in range(num_subsets):
    x = f1[rng.choice(f1.shape[0], m, replace=False)]
    y = f2[rng.choice(f2.shape[0], m, replace=False)]
    mmds[i] = _polynomial_mmd2(x, y)
  return float(np.mean(mmds)), float(np.std(mmds))


# ------------------------------------------------------------------------------------------------
# Reference statistics files.
# ------------------------------------------------------------------------------------------------


class Statistics(NamedTuple):
  """Contents of a statistics file: mu (D,), sigma (D, D) and what they were computed on."""
  mu: np.ndarray
  sigma: np.ndarray
  dataset: str
  split: str
  num_images: int
  image_shape: tuple[int, ...]
  implementation: str


def save_statistics(path: str | os.PathLike, mu: Any, sigma: Any, *, dataset: str, split: str,
                    num_images: int, image_shape: Sequence[int], implementation: str) -> None:
  """Writes mu, sigma and their metadata to `path` (.npz; pytorch-fid can read mu and sigma).

  Args:
    path: the file to write (exactly this name).
    mu: (D,) mean of the features.
    sigma: (D, D) covariance.
    dataset: e.g. 'svhn'.
    split: e.g. 'extra'.
    num_images: how many images the statistics summarise.
    image_shape: (H, W, C) of the images as fed to the feature network (before its resize).
    implementation: how the features were made, e.g. `inception.IMPLEMENTATION`.
  """
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != mu.shape * 2:
    raise ValueError(f"mu must be (D,) and sigma (D, D); got {mu.shape} and {sigma.shape}.")
  buffer = io.BytesIO()  # a file object keeps np.savez from appending '.npz'
  np.savez(buffer, mu=mu, sigma=sigma, dataset=np.asarray(str(dataset)),
           split=np.asarray(str(split)), num_images=np.asarray(int(num_images), np.int64),
           image_shape=np.asarray(tuple(int(s) for s in image_shape), np.int64),
           implementation=np.asarray(str(implementation)))
  fileio.write_bytes(os.fspath(path), buffer.getvalue())


def load_statistics(path: str | os.PathLike, *, dataset: str, split: str,
                    image_shape: Sequence[int]) -> Statistics:
  """Reads a `save_statistics` file, checking it was made for this dataset, split and image shape.

  Args:
    path: the `.npz` file.
    dataset, split, image_shape: what the caller compares against.

  Returns:
    The file's `Statistics`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file lacks the metadata, or was made for another dataset, split or image
      shape (the message names both).
  """
  path = os.fspath(path)
  if not fileio.exists(path):
    raise FileNotFoundError(f"No FID statistics file at {path}.")
  keys = ("mu", "sigma", "dataset", "split", "num_images", "image_shape", "implementation")
  with np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False) as f:
    absent = [k for k in keys if k not in f.files]
    if absent:
      raise ValueError(f"{path} lacks {absent}: not written by save_statistics (statistics without "
                       "metadata cannot be checked against the data they are compared with).")
    stats = Statistics(mu=f["mu"], sigma=f["sigma"], dataset=str(f["dataset"]),
                       split=str(f["split"]), num_images=int(f["num_images"]),
                       image_shape=tuple(int(s) for s in f["image_shape"]),
                       implementation=str(f["implementation"]))
  want = (str(dataset), str(split), tuple(int(s) for s in image_shape))
  have = (stats.dataset, stats.split, stats.image_shape)
  if have != want:
    raise ValueError(f"{path} holds statistics of dataset={have[0]!r}, split={have[1]!r}, "
                     f"image_shape={have[2]}, but dataset={want[0]!r}, split={want[1]!r}, "
                     f"image_shape={want[2]} was asked for.")
  return stats


# ------------------------------------------------------------------------------------------------
# Features of a stream of batches.
# ------------------------------------------------------------------------------------------------


def streaming_features(feature_fn: Callable[[Any], Any], batches: Iterable[Any],
                       num: int) -> np.ndarray:
  """Features of the first `num` images of a stream of batches, gathered on the host.

  One batch at a time goes to the device; the result of batch i is copied to the host while
  batch i + 1 is computed (JAX dispatches asynchronously). Host memory is the (num, D) float32
  output; rows of the last batch past `num` are computed and dropped (keeping the batch shape
  avoids a recompilation).

  Args:
    feature_fn: images (B, ...) -> (B, D), e.g. `inception.feature_fn(variables)`.
    batches: iterable of image batches; only as many are drawn as `num` needs.
    num: rows wanted.

  Returns:
    (num, D) float32 numpy.

  Raises:
    ValueError: the batches ran out before `num` images.
  """
  if num < 1:
    raise ValueError(f"num must be positive; got {num}.")
  out = None
  filled = 0

  def store(result, take):
    nonlocal out, filled
    result = np.asarray(result)
    if out is None:
      out = np.empty((num,) + result.shape[1:], np.float32)
    out[filled:filled + take] = result[:take]
    filled += take

  pending, dispatched = None, 0
  for batch in batches:
    result = feature_fn(batch)
    take = min(result.shape[0], num - dispatched)
    dispatched += take
    if pending is not None:
      store(*pending)
    pending = (result, take)
    if dispatched >= num:
      break
  if pending is not None:
    store(*pending)
  if filled < num:
    raise ValueError(f"The batches ran out after {filled} of the {num} images asked for.")
  return out
