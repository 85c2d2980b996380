"""Tests of hebm_jax.evaluation.mig: the entropy estimator and MIG / MIG-sup on known answers."""

import itertools
import math

import jax
import numpy as np
import pytest

from hebm_jax.evaluation import mig

SIZES = (4, 5, 3)
# Full factorial of SIZES, 60 rows, tiled REPEATS times: N = 300 and K = 3 in most tests, so that
# they share the compiled estimator (one compilation per (samples, components) shape).
GRID = np.array(list(itertools.product(*[range(s) for s in SIZES])), np.int32)
REPEATS = 5
# Posterior std of the "copy" latents: the value clusters (spacing 1) do not overlap, so every
# estimate is exact up to float32 once all samples are used (num_samples >= N).
TIGHT_LOGVAR = 2.0 * math.log(0.01)


def _factors(repeats=REPEATS):
  return np.tile(GRID, (repeats, 1))


def _brute_force_entropy(z, means, logvars):
  """float64 mean over samples of log N - log sum_n N(z; means_n, exp(logvars_n)), per unit."""
  var = np.exp(logvars)[None]  # (1, N, K)
  log_q = -0.5 * (np.log(2 * np.pi) + np.log(var) + (z[:, None, :] - means[None]) ** 2 / var)
  m = log_q.max(axis=1, keepdims=True)
  lse = (m + np.log(np.exp(log_q - m).sum(axis=1, keepdims=True)))[:, 0]
  return np.mean(np.log(means.shape[0]) - lse, axis=0)


def test_entropy_estimates_matches_brute_force():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(50, 3))
  logvars = rng.uniform(-1.0, 0.5, size=(50, 3))
  z = rng.normal(scale=1.5, size=(13, 3))
  out = mig.entropy_estimates(z, means, logvars, chunk_size=4)
  assert out.shape == (3,)
  np.testing.assert_allclose(np.asarray(out), _brute_force_entropy(z, means, logvars), rtol=1e-5)


def test_entropy_estimates_single_gaussian_closed_form():
  # A mixture of one component repeated is that Gaussian: H = 0.5 log(2 pi e sigma^2).
  rng = np.random.default_rng(1)
  sigma = np.array([0.5, 2.0])
  mu = np.array([0.3, -1.0])
  means = np.tile(mu, (20, 1))
  logvars = np.tile(2 * np.log(sigma), (20, 1))
  z = mu + sigma * rng.normal(size=(20_000, 2))
  out = np.asarray(mig.entropy_estimates(z, means, logvars, chunk_size=500))
  # Monte Carlo std of the estimate: 0.5 * sqrt(2) / sqrt(20000) = 0.005.
  np.testing.assert_allclose(out, 0.5 * np.log(2 * np.pi * np.e * sigma ** 2), atol=0.025)


def test_chunked_matches_unchunked():
  rng = np.random.default_rng(2)
  means = rng.normal(size=(40, 2))
  logvars = rng.uniform(-2.0, 0.0, size=(40, 2))
  z = rng.normal(size=(23, 2))  # 23 = 3 * 7 + 2: the last chunk is padded.
  chunked = mig.entropy_estimates(z, means, logvars, chunk_size=7)
  whole = mig.entropy_estimates(z, means, logvars, chunk_size=23)
  one = mig.entropy_estimates(z, means, logvars, chunk_size=1)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(one), np.asarray(whole), rtol=1e-6)

  factors = _factors()
  means = factors + 0.3 * rng.normal(size=factors.shape)
  logvars = np.full(factors.shape, 2 * math.log(0.3))
  key = jax.random.key(3)
  # 100 samples: the marginal is subsampled (from 300), the conditionals use all 60 to 100.
  a = mig.mig_scores(means, logvars, factors, SIZES, key, num_samples=100, chunk_size=7)
  b = mig.mig_scores(means, logvars, factors, SIZES, key, num_samples=100)
  np.testing.assert_allclose(a["mi"], b["mi"], atol=1e-5)
  assert a["mig"] == pytest.approx(b["mig"], abs=1e-5)
  assert a["mig_sup"] == pytest.approx(b["mig_sup"], abs=1e-5)


def test_latents_copying_factors_give_mig_one():
  factors = _factors()
  means = factors.astype(np.float64)
  logvars = np.full(means.shape, TIGHT_LOGVAR)
  out = mig.mig_scores(means, logvars, factors, SIZES, jax.random.key(0))
  assert out["mig"] > 0.95 and out["mig_sup"] > 0.95
  np.testing.assert_allclose(out["mi"], np.eye(3), atol=1e-3)
  assert out["active"].tolist() == [True, True, True] and out["num_active"] == 3


def test_latents_independent_of_factors_give_mig_zero():
  # Overlapping posteriors (std 0.5 around N(0, 1) means) keep the estimator's positive bias
  # small: over 20 seeds the largest normalised MI was 0.03, MIG and MIG-sup at most 0.012.
  factors = _factors()
  rng = np.random.default_rng(4)
  means = rng.normal(size=(factors.shape[0], 3))
  logvars = np.full(means.shape, 2 * math.log(0.5))
  out = mig.mig_scores(means, logvars, factors, SIZES, jax.random.key(1))
  assert out["mi"].max() < 0.06
  assert 0.0 <= out["mig"] < 0.05 and 0.0 <= out["mig_sup"] < 0.05
  assert out["num_active"] == 3


def test_one_latent_encoding_two_factors():
  # z0 = 5 f0 + f1 is a bijection of (f0, f1): MI(f0, z0) = log 4 and MI(f1, z0) = log 5, both
  # normalised to 1; z1 = f2; z2 is constant (inactive, MI 0). Normalised MI (factors x latents)
  # = [[1, 0, 0], [1, 0, 0], [0, 1, 0]], so MIG = mean(1, 1, 1) = 1 while MIG-sup over the two
  # active latents = mean(1 - 1, 1 - 0) = 0.5.
  factors = _factors()
  means = np.stack([5.0 * factors[:, 0] + factors[:, 1], factors[:, 2],
                    np.full(factors.shape[0], -0.2)], axis=1)
  logvars = np.full(means.shape, TIGHT_LOGVAR)
  out = mig.mig_scores(means, logvars, factors, SIZES, jax.random.key(2))
  np.testing.assert_allclose(out["mi"], [[1, 0, 0], [1, 0, 0], [0, 1, 0]], atol=1e-3)
  assert out["active"].tolist() == [True, True, False]
  assert out["mig"] == pytest.approx(1.0, abs=1e-3)
  assert out["mig_sup"] == pytest.approx(0.5, abs=1e-3)


def test_inactive_latents_are_excluded_from_mig_sup():
  factors = _factors()
  n = factors.shape[0]
  rng = np.random.default_rng(5)
  # A copy of factor 0, a constant latent and one whose mean has std 0.05 (variance 2.5e-3).
  means = np.concatenate([factors[:, :1].astype(np.float64), np.full((n, 1), 0.7),
                          0.05 * rng.normal(size=(n, 1))], axis=1)
  logvars = np.concatenate([np.full((n, 1), TIGHT_LOGVAR), np.zeros((n, 2))], axis=1)
  out = mig.mig_scores(means, logvars, factors, SIZES, jax.random.key(3))
  assert out["active"].tolist() == [True, False, False] and out["num_active"] == 1
  # Over the active latent only the gap is 1; the inactive ones would pull the mean to ~1/3.
  assert out["mig_sup"] == pytest.approx(1.0, abs=1e-3)
  gaps = [np.sort(col)[-1] - np.sort(col)[-2] for col in out["mi"].T]
  assert out["mig_sup"] == pytest.approx(np.mean(np.array(gaps)[out["active"]]), abs=1e-12)
  # A lower threshold counts the low-variance latent as active: its gap is small.
  low = mig.mig_scores(means, logvars, factors, SIZES, jax.random.key(3), active_threshold=1e-3)
  assert low["active"].tolist() == [True, False, True] and low["mig_sup"] < 0.6
  assert low["mig_sup"] == pytest.approx(np.mean(np.array(gaps)[[0, 2]]), abs=1e-12)


def test_no_active_latent_gives_nan_mig_sup():
  factors = _factors()
  means = np.full((factors.shape[0], 3), 0.5)
  out = mig.mig_scores(means, np.zeros_like(means), factors, SIZES, jax.random.key(0))
  assert out["num_active"] == 0 and not out["active"].any()
  assert math.isnan(out["mig_sup"])
  assert out["mig"] == pytest.approx(0.0, abs=0.05)


def test_all_samples_used_when_fewer_than_num_samples():
  factors = _factors()
  rng = np.random.default_rng(6)
  means = factors + 0.5 * rng.normal(size=factors.shape)
  logvars = np.zeros(factors.shape)
  key = jax.random.key(7)
  exact = mig.mutual_information(means, logvars, factors, SIZES, key, num_samples=factors.shape[0])
  more = mig.mutual_information(means, logvars, factors, SIZES, key, num_samples=10_000)
  np.testing.assert_array_equal(exact, more)
  assert exact.shape == (3, 3) and (exact >= 0).all()


def test_same_key_reproducible_different_key_differs():
  factors = _factors()
  rng = np.random.default_rng(8)
  means = factors + 0.5 * rng.normal(size=factors.shape)
  logvars = np.full(factors.shape, 2 * math.log(0.4))
  args = (means, logvars, factors, SIZES)
  a = mig.mig_scores(*args, jax.random.key(11), num_samples=100)
  b = mig.mig_scores(*args, jax.random.key(11), num_samples=100)
  c = mig.mig_scores(*args, jax.random.key(12), num_samples=100)
  np.testing.assert_array_equal(a["mi"], b["mi"])
  assert a["mig"] == b["mig"] and a["mig_sup"] == b["mig_sup"]
  assert not np.array_equal(a["mi"], c["mi"])
  np.testing.assert_allclose(a["mi"], c["mi"], atol=0.15)
  assert a["mig"] == pytest.approx(c["mig"], abs=0.1)


def _valid():
  factors = _factors(1)
  means = np.zeros((factors.shape[0], 2)) + np.arange(factors.shape[0])[:, None]
  return means, np.zeros_like(means), factors


@pytest.mark.parametrize("mutate, match", [
    (lambda m, l, f, s: (m, l[:, :1], f, s), "logvars shape"),
    (lambda m, l, f, s: (m, l, f[:-1], s), "factors must be 2-D"),
    (lambda m, l, f, s: (m, l, f[:, 0], s), "factors must be 2-D"),
    (lambda m, l, f, s: (m[:, 0], l, f, s), "means must be 2-D"),
    (lambda m, l, f, s: (m, l, f, s[:2]), r"len\(factor_sizes\)"),
    (lambda m, l, f, s: (m, l, f, (4, 1, 3)), "factor 1 has size 1"),
    (lambda m, l, f, s: (m, l, np.where(f == 2, -1, f), s), r"factor 0 has values .* outside"),
    (lambda m, l, f, s: (m, l, f, (4, 5, 2)), r"factor 2 has values .* outside \[0, 2\)"),
    (lambda m, l, f, s: (m, l, f.astype(np.float32), s), "integers"),
    (lambda m, l, f, s: (np.where(m == 0, np.nan, m), l, f, s), "finite"),
])
def test_mutual_information_rejects_bad_inputs(mutate, match):
  means, logvars, factors, sizes = mutate(*_valid(), SIZES)
  with pytest.raises(ValueError, match=match):
    mig.mutual_information(means, logvars, factors, sizes, jax.random.key(0))


def test_other_value_errors():
  means, logvars, factors = _valid()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="at least 2 latents"):
    mig.mig_scores(means[:, :1], logvars[:, :1], factors, SIZES, key)
  with pytest.raises(ValueError, match="at least 2 factors"):
    mig.mig_scores(means, logvars, factors[:, :1], SIZES[:1], key)
  with pytest.raises(ValueError, match="num_samples"):
    mig.mutual_information(means, logvars, factors, SIZES, key, num_samples=0)
  with pytest.raises(ValueError, match="chunk_size"):
    mig.mutual_information(means, logvars, factors, SIZES, key, chunk_size=0)
  with pytest.raises(ValueError, match="latents"):
    mig.entropy_estimates(np.zeros((3, 3)), means, logvars)
  with pytest.raises(ValueError, match="logvars shape"):
    mig.entropy_estimates(np.zeros((3, 2)), means, logvars[:5])
