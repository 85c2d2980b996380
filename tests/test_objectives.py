"""Known-answer tests of hebm_jax.objectives (REFERENCE Sec. 1.1), numbers written out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import objectives

# A tiny case, B = 2, d = 2.
Z = np.array([[0.5, -1.0], [2.0, 0.0]])
MEAN = np.array([[0.0, 1.0], [1.0, -1.0]])
LOGVAR = np.array([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
EPS = 1e-6

# -log N(z; mean, diag(exp(logvar))) without the log(2 pi) constants and with +1e-6 in the variance:
#   row 0: 0.5 * (0 + log 4) + 0.5 * ((0.5 - 0)^2 / (1 + eps) + (-1 - 1)^2 / (4 + eps))
#   row 1: 0.5 * (log 0.25 + 0) + 0.5 * ((2 - 1)^2 / (0.25 + eps) + (0 + 1)^2 / (1 + eps))
NLL = np.array([
    0.5 * math.log(4.0) + 0.5 * (0.25 / (1 + EPS) + 4.0 / (4 + EPS)),
    0.5 * math.log(0.25) + 0.5 * (1.0 / (0.25 + EPS) + 1.0 / (1 + EPS)),
])
# -log N(z; 0, I) (same convention): 0.5 * sum z^2 / (1 + eps).
NLL_STD = np.array([0.5 * (0.25 + 1.0) / (1 + EPS), 0.5 * (4.0 + 0.0) / (1 + EPS)])
# Closed-form KL(N(mean, var) || N(0, I)) = 0.5 * sum(var + mean^2 - 1 - log var):
#   row 0: 0.5 * ((1 + 0 - 1 - 0) + (4 + 1 - 1 - log 4))
#   row 1: 0.5 * ((0.25 + 1 - 1 - log 0.25) + (1 + 1 - 1 - 0))
KL_ANALYTIC = np.array([0.5 * (4.0 - math.log(4.0)), 0.5 * (0.25 - math.log(0.25) + 1.0)])


def _f32(a):
  return jnp.asarray(a, jnp.float32)


def test_diag_normal_nll_known_values():
  out = objectives.diag_normal_nll(_f32(Z), _f32(MEAN), _f32(LOGVAR))
  assert out.shape == (2,)
  np.testing.assert_allclose(out, NLL, rtol=1e-6)
  # Numerically: row 0 = 0.693147 + 0.625 = 1.318147, row 1 = -0.693147 + 2.499992 = 1.806844
  np.testing.assert_allclose(out, [1.3181469, 1.8068443], rtol=1e-5)


def test_diag_normal_nll_epsilon_in_denominator():
  """With a tiny variance the +1e-6 caps the quadratic term: (z - m)^2 / (exp(logvar) + 1e-6)."""
  z, m, lv = _f32([[1.0]]), _f32([[0.0]]), _f32([[-30.0]])
  out = objectives.diag_normal_nll(z, m, lv)
  expected = 0.5 * -30.0 + 0.5 * 1.0 / (math.exp(-30.0) + 1e-6)
  np.testing.assert_allclose(out, [expected], rtol=1e-5)
  assert float(out[0]) < 5.1e5  # without the epsilon it would be ~5e12


def test_kl_single_sample_known_values():
  out = objectives.kl_single_sample(_f32(Z), _f32(MEAN), _f32(LOGVAR))
  assert out.shape == (2,)
  np.testing.assert_allclose(out, NLL_STD - NLL, rtol=1e-5)
  # log q(z|x) - log N(z; 0, I): row 0 = 0.625 - 1.318147, row 1 = 2.0 - 1.806844.
  np.testing.assert_allclose(out, [-0.6931476, 0.1931537], rtol=1e-5)


def test_kl_analytic_known_values():
  out = objectives.kl_analytic(_f32(MEAN), _f32(LOGVAR))
  assert out.shape == (2,)
  np.testing.assert_allclose(out, KL_ANALYTIC, rtol=1e-6)
  np.testing.assert_allclose(out, [1.3068528, 1.3181472], rtol=1e-5)
  # Zero exactly when q = N(0, I).
  np.testing.assert_allclose(objectives.kl_analytic(jnp.zeros((3, 4)), jnp.zeros((3, 4))), 0.0)


def test_single_sample_kl_is_unbiased_for_analytic_kl():
  n = 200_000
  mean = _f32(MEAN[0])
  logvar = _f32(LOGVAR[0])
  eps = jax.random.normal(jax.random.PRNGKey(0), (n, 2))
  z = objectives.reparameterize(mean[None], logvar[None], eps)
  kls = np.asarray(objectives.kl_single_sample(z, jnp.broadcast_to(mean, z.shape),
                                               jnp.broadcast_to(logvar, z.shape)), np.float64)
  se = kls.std() / np.sqrt(n)
  assert abs(kls.mean() - KL_ANALYTIC[0]) < 4 * se + 1e-4


def test_reparameterize():
  eps = _f32([[1.0, -0.5], [0.0, 2.0]])
  out = objectives.reparameterize(_f32(MEAN), _f32(LOGVAR), eps)
  # mean + exp(logvar / 2) * eps: stds are [[1, 2], [0.5, 1]].
  np.testing.assert_allclose(out, [[1.0, 0.0], [1.0, 1.0]], rtol=1e-6)


def test_reconstruction_loss_is_sum_over_batch_size():
  x = np.zeros((2, 2, 2, 1))
  x_hat = np.zeros((2, 2, 2, 1))
  x_hat[0, 0, 0, 0] = 1.0
  x_hat[0, 1, 1, 0] = -2.0
  x_hat[1, 0, 1, 0] = 3.0
  out = objectives.reconstruction_loss(_f32(x_hat), _f32(x))
  assert out.shape == ()
  np.testing.assert_allclose(out, (1.0 + 4.0 + 9.0) / 2, rtol=1e-6)


def test_generator_encoder_loss():
  rec = _f32(7.0)
  kls = _f32([0.5, 1.5, 2.0])
  f = _f32([1.0, 3.0])
  out = objectives.generator_encoder_loss(rec, kls, f, gfactor=3.0)
  np.testing.assert_allclose(out, 3.0 * 7.0 + 4.0 - 2.0, rtol=1e-6)


def test_ebm_loss():
  out = objectives.ebm_loss(_f32([1.0, 2.0, 6.0]), _f32([0.5, -0.5, 4.0]))
  np.testing.assert_allclose(out, 3.0 - 4.0 / 3.0, rtol=1e-6)
  # Gradients: +1/B on negatives, -1/B on positives.
  g_neg, g_pos = jax.grad(objectives.ebm_loss, argnums=(0, 1))(_f32([1.0, 2.0]), _f32([0.0, 0.0]))
  np.testing.assert_allclose(g_neg, [0.5, 0.5])
  np.testing.assert_allclose(g_pos, [-0.5, -0.5])


def test_kl_terms():
  zs = [_f32(Z), _f32(Z[:, :1])]
  means = [_f32(MEAN), _f32(MEAN[:, :1])]
  logvars = [_f32(LOGVAR), _f32(LOGVAR[:, :1])]
  sample = objectives.kl_terms(zs, means, logvars)
  assert sample.shape == (2,)
  # Second layer (d = 1): row 0 = 0.125/(1+eps) - (0 + 0.125/(1+eps)) = 0,
  # row 1 = 2/(1+eps) - (0.5 log 0.25 + 0.5/(0.25+eps)).
  layer1 = [0.0, 2.0 / (1 + EPS) - (0.5 * math.log(0.25) + 0.5 / (0.25 + EPS))]
  np.testing.assert_allclose(sample, [np.mean(NLL_STD - NLL), np.mean(layer1)], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(objectives.kl_terms(zs, means, logvars, "sample"), sample)

  analytic = objectives.kl_terms(zs, means, logvars, estimator="analytic")
  layer1 = [0.0, 0.5 * (0.25 + 1.0 - 1.0 - math.log(0.25))]
  np.testing.assert_allclose(analytic, [np.mean(KL_ANALYTIC), np.mean(layer1)], rtol=1e-5,
                             atol=1e-6)

  with pytest.raises(ValueError, match="Unknown KL estimator 'exact'"):
    objectives.kl_terms(zs, means, logvars, estimator="exact")
