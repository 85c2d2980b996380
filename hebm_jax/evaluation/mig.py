"""Mutual Information Gap (MIG) and MIG-sup, as pro-VLAE computes them on 3DShapes.

Follows `mutual_info_metric_3dshapes` / `compute_metric_3dshapes` / `estimate_entropies` of
pro-VLAE's `metric_MIG.py` (itself adapted from beta-TCVAE's `disentanglement_metrics.py` and
`metric_helpers/mi_metric.py`):

* One sample z_n ~ q(z | x_n) = N(mu_n, diag(exp(logvar_n))) is drawn per image, once; the
  marginal and every conditional estimate reuse these same samples.
* Per latent unit j, H(z_j) = E[-log q(z_j)] with q(z_j) = 1/N sum_n N(z_j; mu_nj, sigma_nj^2),
  estimated on at most `num_samples` of the z_n chosen without replacement:
  -log q(z_j) = log N - logsumexp_n log N(z_j; mu_nj, sigma_nj^2), the log-density including
  its -0.5 log(2 pi) constant.
* H(z_j | v_k) uses the same estimator restricted to the images whose factor k has value v (both
  the samples and the mixture), averaged over the values v.
* MI_kj = H(z_j) - H(z_j | v_k), divided by log(size_k) and clamped at 0 (pro-VLAE divides, then
  clamps; the order is immaterial since log(size_k) > 0).
* MIG = mean over factors of the gap between the two largest normalised MIs over latents;
  MIG-sup = mean over active latents of the gap between the two largest normalised MIs over
  factors. A latent is active if the unbiased variance over images of its posterior mean exceeds
  the threshold (1e-2), as `torch.std(...).pow(2) > 1e-2` in the reference.

Where this module generalises the reference: the conditional entropies are averaged with weights
proportional to the number of images having each value (the reference divides by the factor size,
which is the same on a full factorial such as 3DShapes); the factor sizes are an argument instead
of the hard-coded (10, 10, 10, 8, 4, 15); a value with no image contributes nothing. With no active
latent MIG-sup is NaN, as the reference's mean over an empty selection.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Array = jax.Array

# The reference draws batches of 50 samples; memory of one chunk is about
# chunk_size * N * K * 4 bytes (0.55 GB for N = 480,000 and K = 9 at 32).
DEFAULT_CHUNK_SIZE = 32
DEFAULT_NUM_SAMPLES = 10_000
DEFAULT_ACTIVE_THRESHOLD = 1e-2

_LOG_2PI = math.log(2.0 * math.pi)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _mean_neg_log_marginal(z_samples: Array, means: Array, logvars: Array,
                           chunk_size: int) -> Array:
  """Jitted core of `entropy_estimates`: (S, K), (N, K), (N, K) -> (K,)."""
  num_samples, num_latents = z_samples.shape
  num_components = means.shape[0]
  num_chunks = -(-num_samples // chunk_size)
  pad = num_chunks * chunk_size - num_samples
  # Static shapes for lax.map: the padded rows are computed and then sliced away below.
  chunks = jnp.pad(z_samples, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, num_latents)
  inv_var = jnp.exp(-logvars)
  log_norm = -0.5 * (_LOG_2PI + logvars)
  log_n = jnp.log(jnp.float32(num_components))

  def one_chunk(z: Array) -> Array:
    # (chunk, N, K) is the largest intermediate: bounded by chunk_size, never by S.
    log_q = log_norm[None] - 0.5 * jnp.square(z[:, None, :] - means[None]) * inv_var[None]
    return log_n - jax.scipy.special.logsumexp(log_q, axis=1)

  neg_log_q = jax.lax.map(one_chunk, chunks).reshape(num_chunks * chunk_size, num_latents)
  return jnp.mean(neg_log_q[:num_samples], axis=0)


def _check_chunk_size(chunk_size: int) -> None:
  if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")


def entropy_estimates(z_samples: ArrayLike, means: ArrayLike, logvars: ArrayLike,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """Per-unit entropy of a Gaussian mixture, estimated on the given samples.

  Computes, for every latent unit j separately, the mean over the samples s of
  -log q(z_sj) = log N - logsumexp_n log N(z_sj; means_nj, exp(logvars_nj)), where q(z_j) is the
  uniform mixture of the N one-dimensional Gaussians of unit j. Used with samples drawn from the
  mixture itself, this is the Monte-Carlo estimate of H(z_j).

  Args:
    z_samples: (S, K) samples.
    means: (N, K) component means.
    logvars: (N, K) component log-variances.
    chunk_size: samples processed at once; memory is O(chunk_size * N * K), never O(S * N * K).

  Returns:
    (K,) float32 entropy estimates, in nats.

  Raises:
    ValueError: on mismatched shapes, an empty input or a non-positive chunk_size.
  """
  _check_chunk_size(chunk_size)
  z_samples = jnp.asarray(z_samples, jnp.float32)
  means = jnp.asarray(means, jnp.float32)
  logvars = jnp.asarray(logvars, jnp.float32)
  if z_samples.ndim != 2 or means.ndim != 2:
    raise ValueError(f"z_samples and means must be 2-D (S, K) and (N, K), got shapes "
                     f"{z_samples.shape} and {means.shape}.")
  if logvars.shape != means.shape:
    raise ValueError(f"logvars shape {logvars.shape} does not match means shape {means.shape}.")
  if z_samples.shape[1] != means.shape[1]:
    raise ValueError(f"z_samples has {z_samples.shape[1]} latents but means has {means.shape[1]}.")
  if z_samples.shape[0] == 0 or means.shape[0] == 0:
    raise ValueError("z_samples and means must have at least one row.")
  return _mean_neg_log_marginal(z_samples, means, logvars, chunk_size=int(chunk_size))


def _validate(means: ArrayLike, logvars: ArrayLike, factors: ArrayLike,
              factor_sizes: Sequence[int], num_samples: int,
              chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
  """Checks the inputs of `mutual_information`; returns host copies and the sizes as ints."""
  means_np = np.asarray(means)
  logvars_np = np.asarray(logvars)
  factors_np = np.asarray(factors)
  if means_np.ndim != 2:
    raise ValueError(f"means must be 2-D (N, K), got shape {means_np.shape}.")
  if logvars_np.shape != means_np.shape:
    raise ValueError(f"logvars shape {logvars_np.shape} does not match means shape "
                     f"{means_np.shape}.")
  if factors_np.ndim != 2 or factors_np.shape[0] != means_np.shape[0]:
    raise ValueError(f"factors must be 2-D (N, F) with N = {means_np.shape[0]} rows like means, "
                     f"got shape {factors_np.shape}.")
  if means_np.shape[0] < 2 or means_np.shape[1] < 1:
    raise ValueError(f"need at least 2 images and 1 latent, got means of shape {means_np.shape}.")
  if not (np.all(np.isfinite(means_np)) and np.all(np.isfinite(logvars_np))):
    raise ValueError("means and logvars must be finite.")
  if not np.issubdtype(factors_np.dtype, np.integer):
    raise ValueError(f"factors must hold integers, got dtype {factors_np.dtype}.")
  sizes = tuple(int(s) for s in factor_sizes)
  if len(sizes) != factors_np.shape[1]:
    raise ValueError(f"len(factor_sizes) = {len(sizes)} but factors has "
                     f"{factors_np.shape[1]} columns.")
  for k, size in enumerate(sizes):
    if size < 2:
      raise ValueError(f"factor {k} has size {size}; every factor needs at least 2 values "
                       "(its MI is normalised by log(size)).")
    column = factors_np[:, k]
    if column.min() < 0 or column.max() >= size:
      raise ValueError(f"factor {k} has values in [{column.min()}, {column.max()}], outside "
                       f"[0, {size}).")
  if num_samples < 1:
    raise ValueError(f"num_samples must be positive, got {num_samples}.")
  _check_chunk_size(chunk_size)
  return means_np, logvars_np, factors_np, sizes


def _subsampled_entropy(key: Array, z: Array, means: Array, logvars: Array,
                        indices: np.ndarray | None, num_samples: int, chunk_size: int) -> Array:
  """H(z_j) of the mixture over the rows `indices` (all rows if None), on <= num_samples of them."""
  if indices is not None:
    z, means, logvars = z[indices], means[indices], logvars[indices]
  count = z.shape[0]
  if count > num_samples:
    # Without replacement, as torch.randperm(n)[:n_samples] in the reference.
    z = z[jax.random.permutation(key, count)[:num_samples]]
  return entropy_estimates(z, means, logvars, chunk_size=chunk_size)


def _mutual_information(means: ArrayLike, logvars: ArrayLike, factors: ArrayLike,
                        factor_sizes: Sequence[int], key: Array, num_samples: int,
                        chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Normalised, clamped MI (F, K) and the posterior means on the host (for the active test)."""
  means_np, logvars_np, factors_np, sizes = _validate(means, logvars, factors, factor_sizes,
                                                      num_samples, chunk_size)
  n = means_np.shape[0]
  sample_key, subsample_key = jax.random.split(key)
  means_d = jnp.asarray(means_np, jnp.float32)
  logvars_d = jnp.asarray(logvars_np, jnp.float32)
  # One draw per image shared by the marginal and all conditional estimates, as in the reference.
  z = means_d + jnp.exp(0.5 * logvars_d) * jax.random.normal(sample_key, means_d.shape,
                                                              jnp.float32)

  marginal = np.asarray(_subsampled_entropy(jax.random.fold_in(subsample_key, 0), z, means_d,
                                            logvars_d, None, num_samples, chunk_size), np.float64)
  conditional = np.zeros((len(sizes), means_np.shape[1]), np.float64)
  for k, size in enumerate(sizes):
    factor_key = jax.random.fold_in(subsample_key, k + 1)
    for v in range(size):
      indices = np.flatnonzero(factors_np[:, k] == v)
      if indices.size == 0:
        continue
      h = _subsampled_entropy(jax.random.fold_in(factor_key, v), z, means_d, logvars_d, indices,
                              num_samples, chunk_size)
      # Weight by count: equals the reference's 1/size on a full factorial.
      conditional[k] += np.asarray(h, np.float64) * (indices.size / n)

  log_sizes = np.log(np.asarray(sizes, np.float64))[:, None]
  mi = np.maximum((marginal[None, :] - conditional) / log_sizes, 0.0)
  return mi, means_np


def mutual_information(means: ArrayLike, logvars: ArrayLike, factors: ArrayLike,
                       factor_sizes: Sequence[int], key: Array,
                       num_samples: int = DEFAULT_NUM_SAMPLES,
                       chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
  """Normalised mutual information between every factor and every latent unit.

  MI_kj = (H(z_j) - H(z_j | v_k)) / log(factor_sizes[k]), clamped at 0. H(z_j | v_k) is the
  count-weighted average over the values v of factor k (the reference's plain average over values
  on a full factorial such as 3DShapes).

  Args:
    means: (N, K) posterior means of all latent units (all layers concatenated).
    logvars: (N, K) posterior log-variances (pro-VLAE stores log sigma = 0.5 * logvar).
    factors: (N, F) integer factor labels, column k in [0, factor_sizes[k]).
    factor_sizes: (F,) number of values of each factor, e.g. (10, 10, 10, 8, 4, 15) on 3DShapes.
    key: jax.random key; the z draw and every subsample derive from it.
    num_samples: entropy samples per estimate (all of them when fewer are available).
    chunk_size: samples per step of the logsumexp; see `entropy_estimates`.

  Returns:
    (F, K) float64 array of normalised MI, in [0, ~1].

  Raises:
    ValueError: on mismatched shapes, non-integer or out-of-range factor values,
      len(factor_sizes) != F, a factor size below 2, non-finite posteriors, or non-positive
      num_samples / chunk_size.
  """
  mi, _ = _mutual_information(means, logvars, factors, factor_sizes, key, num_samples, chunk_size)
  return mi


def _mean_top_gap(rows: np.ndarray) -> float:
  """Mean over rows of (largest - second largest); NaN for no rows, like torch.mean of empty."""
  if rows.shape[0] == 0:
    return float("nan")
  top2 = -np.sort(-rows, axis=1)[:, :2]
  return float(np.mean(top2[:, 0] - top2[:, 1]))


def mig_scores(means: ArrayLike, logvars: ArrayLike, factors: ArrayLike,
               factor_sizes: Sequence[int], key: Array, num_samples: int = DEFAULT_NUM_SAMPLES,
               active_threshold: float = DEFAULT_ACTIVE_THRESHOLD,
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, Any]:
  """MIG and MIG-sup of posterior parameters against ground-truth factors.

  Args:
    means: (N, K) posterior means, K >= 2 (MIG needs a second-best latent).
    logvars: (N, K) posterior log-variances.
    factors: (N, F) integer factor labels, F >= 2 (MIG-sup needs a second-best factor).
    factor_sizes: (F,) number of values of each factor.
    key: jax.random key; same key, same result.
    num_samples: entropy samples per estimate (10,000 in the reference).
    active_threshold: a latent is active if the unbiased variance over images of its mean
      exceeds this.
    chunk_size: samples per step of the logsumexp; see `entropy_estimates`.

  Returns:
    dict with 'mig' (float: mean over factors of the top-two gap over latents), 'mig_sup' (float:
    mean over active latents of the top-two gap over factors; NaN if no latent is active, as in
    the reference), 'mi' ((F, K) normalised MI, see `mutual_information`), 'active' ((K,) bool)
    and 'num_active' (int).

  Raises:
    ValueError: on K < 2, F < 2, or any input `mutual_information` rejects.
  """
  means_shape = np.shape(means)
  factors_shape = np.shape(factors)
  if len(means_shape) == 2 and means_shape[1] < 2:
    raise ValueError(f"MIG needs at least 2 latents, got means of shape {means_shape}.")
  if len(factors_shape) == 2 and factors_shape[1] < 2:
    raise ValueError(f"MIG-sup needs at least 2 factors, got factors of shape {factors_shape}.")
  mi, means_np = _mutual_information(means, logvars, factors, factor_sizes, key, num_samples,
                                     chunk_size)
  # Unbiased, as torch.std(...).pow(2) in the reference.
  variance = np.var(means_np.astype(np.float64), axis=0, ddof=1)
  active = variance > active_threshold
  return {
      "mig": _mean_top_gap(mi),
      "mig_sup": _mean_top_gap(mi.T[active]),
      "mi": mi,
      "active": active,
      "num_active": int(active.sum()),
  }
