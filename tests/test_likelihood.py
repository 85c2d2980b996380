"""Tests of hebm_jax.evaluation.likelihood: log Z of the EBM prior (IS, AIS), the IWAE estimate of
log p(x), bits per dimension."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebm_jax import train
from hebm_jax.evaluation import likelihood, log_joint
from tests.conftest import tiny_digits_config


def _quadratic_f(a, b):
  """f(z) = -a |z|^2 / 2 + b.z; log Z = log E_{N(0,I)} exp f = -D/2 log(1+a) + |b|^2 / (2 (1+a))."""
  b = np.asarray(b, np.float64)
  f = lambda z: -0.5 * a * jnp.sum(z ** 2, axis=-1) + z @ jnp.asarray(b, jnp.float32)
  return f, -0.5 * b.size * math.log(1 + a) + float(b @ b) / (2 * (1 + a))


def _zero_f(z):
  return jnp.zeros(z.shape[:-1], z.dtype)


# --------------------------------------------------------------------------------------------------
# log Z.


def test_importance_sampling_log_z_of_a_gaussian_tilt():
  f, log_z = _quadratic_f(0.5, [0.5, -0.3])
  # 3,000 does not divide 20,000: the last batch is masked.
  est, se = likelihood.log_normalizer_is(f, jax.random.PRNGKey(0), 2, 20_000, batch_size=3_000)
  assert 0 < float(se) < 0.01
  assert abs(float(est) - log_z) < 4 * float(se)


def test_importance_sampling_does_not_depend_on_masked_padding():
  """N = 7 in batches of 3 (3 + 3 + 1 valid) equals the log-mean-exp of those 7 draws."""
  f, _ = _quadratic_f(0.5, [0.5, -0.3])
  key = jax.random.PRNGKey(1)
  est, se = likelihood.log_normalizer_is(f, key, 2, 7, batch_size=3)
  z = np.concatenate([np.asarray(jax.random.normal(k, (3, 2)))
                      for k in jax.random.split(key, 3)])[:7]
  w = np.exp(np.asarray(f(jnp.asarray(z)), np.float64))
  np.testing.assert_allclose(est, np.log(w.mean()), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(se, w.std(ddof=1) / np.sqrt(7) / w.mean(), rtol=1e-4)


def test_flat_energy_has_log_z_zero_exactly():
  est, se = likelihood.log_normalizer_is(_zero_f, jax.random.PRNGKey(2), 3, 1001, batch_size=100)
  assert float(est) == 0.0 and float(se) == 0.0
  out = likelihood.log_normalizer_ais(_zero_f, jax.random.PRNGKey(3), 3, 64, 5, step_size=0.5)
  np.testing.assert_array_equal(out["log_weights"], np.zeros(64))
  assert float(out["log_z"]) == 0.0 and float(out["log_z_std_error"]) == 0.0
  # The chains target N(0, I) throughout: MALA accepts most steps of a moderate size.
  assert 0.5 < float(out["acceptance_rate"]) <= 1.0


@pytest.mark.parametrize("dim, schedule", [(8, "sigmoid"), (16, "linear")])
def test_ais_log_z_of_a_gaussian_tilt(dim, schedule):
  f, log_z = _quadratic_f(1.0, np.linspace(-0.5, 0.5, dim))
  out = likelihood.log_normalizer_ais(f, jax.random.PRNGKey(4), dim, 1_000, 100, step_size=0.7,
                                      schedule=schedule)
  assert out["log_weights"].shape == (1_000,)
  assert out["acceptance_rate_per_temp"].shape == (99,)
  assert out["samples"].shape == (1_000, dim) and out["betas"].shape == (100,)
  assert 0.4 < float(out["acceptance_rate"]) < 1.0
  se = float(out["log_z_std_error"])
  assert 0 < se < 0.05
  assert abs(float(out["log_z"]) - log_z) < 4 * se + 0.01
  # The weighted final chains are draws of the normalised target N(b / (1 + a), I / (1 + a)).
  w = np.exp(np.asarray(out["log_weights"], np.float64) - float(out["log_z"]))
  mean = np.sum(w[:, None] * np.asarray(out["samples"], np.float64), 0) / np.sum(w)
  np.testing.assert_allclose(mean, np.linspace(-0.5, 0.5, dim) / 2, atol=0.12)


def test_ais_has_lower_variance_than_is_in_16_dimensions():
  """Eight independent estimates each, 1,000 draws per estimate: AIS spreads far less than IS.

  For this f the IS weights' relative variance is (4/3)^8 exp(|b|^2 / 6) - 1 ~ 11, i.e. an SE of
  ~0.1 with 1,000 draws; AIS with 100 temperatures removes most of it.
  """
  dim = 16
  f, log_z = _quadratic_f(1.0, np.linspace(-0.5, 0.5, dim))
  keys = jax.random.split(jax.random.PRNGKey(5), 8)
  is_est, is_se = jax.vmap(lambda k: likelihood.log_normalizer_is(f, k, dim, 1_000))(keys)
  ais = jax.vmap(lambda k: likelihood.log_normalizer_ais(f, k, dim, 1_000, 100, step_size=0.7))(
      keys)
  is_est, ais_est = np.asarray(is_est, np.float64), np.asarray(ais["log_z"], np.float64)
  assert np.std(ais_est, ddof=1) < 0.5 * np.std(is_est, ddof=1)
  assert np.mean(np.asarray(ais["log_z_std_error"])) < 0.5 * np.mean(np.asarray(is_se))
  # Both are consistent; AIS's mean error is small.
  assert abs(np.mean(ais_est) - log_z) < 0.03


def test_annealing_schedules():
  for schedule in likelihood.SCHEDULES:
    betas = likelihood.annealing_schedule(50, schedule)
    assert betas.shape == (50,) and betas[0] == 0.0 and betas[-1] == 1.0
    assert np.all(np.diff(betas) > 0)
  np.testing.assert_allclose(likelihood.annealing_schedule(5, "linear"), [0, .25, .5, .75, 1])
  sig = likelihood.annealing_schedule(101, "sigmoid")
  # Denser at the ends than in the middle.
  assert np.diff(sig)[0] < np.diff(sig)[50] and np.diff(sig)[-1] < np.diff(sig)[50]


# --------------------------------------------------------------------------------------------------
# The importance-weighted log-likelihood on a linear-Gaussian model.


class _LinearGaussian:
  """x = W z + sigma eps, z ~ N(0, I_3) as two layers (2, 1); W = Q diag(c) with orthonormal Q,
  so the exact posterior is a diagonal Gaussian and log p(x) = log N(x; 0, W W^T + sigma^2 I)."""

  def __init__(self, seed=0, n=6, c=(1.5, 0.8, 2.0), sigma=0.5):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, len(c))))
    self.w = q * np.asarray(c)
    self.c, self.sigma, self.n = np.asarray(c), sigma, n

  def sample(self, key, batch):
    kz, kx = jax.random.split(key)
    z = np.asarray(jax.random.normal(kz, (batch, 3)), np.float64)
    x = z @ self.w.T + self.sigma * np.asarray(jax.random.normal(kx, (batch, self.n)), np.float64)
    return jnp.asarray(x, jnp.float32)

  def log_px(self, x):
    x = np.asarray(x, np.float64)
    cov = self.w @ self.w.T + self.sigma ** 2 * np.eye(self.n)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (np.sum(x @ np.linalg.inv(cov) * x, 1) + logdet + self.n * np.log(2 * np.pi))

  def log_joint_fn(self, x, zs):
    z = jnp.concatenate(zs, axis=-1)
    r = x - z @ jnp.asarray(self.w.T, jnp.float32)
    log_lik = (-0.5 * jnp.sum(r ** 2, -1) / self.sigma ** 2
               - self.n * math.log(self.sigma) - 0.5 * self.n * math.log(2 * math.pi))
    return log_lik + log_joint.standard_normal_log_prob(z)

  def posterior(self, x, mean_shift=0.0, var_scale=1.0):
    """(mean (B, 3), variance (3,)) of p(z|x), optionally shifted and scaled."""
    precision = 1 + self.c ** 2 / self.sigma ** 2
    mean = (np.asarray(x, np.float64) @ self.w / self.sigma ** 2) / precision
    return mean + mean_shift, var_scale / precision

  def encode_fn(self, mean_shift=0.0, var_scale=1.0):
    def fn(x):
      mean, var = self.posterior(x, mean_shift, var_scale)
      mean = jnp.asarray(mean, jnp.float32)
      logvar = jnp.broadcast_to(jnp.asarray(np.log(var), jnp.float32), mean.shape)
      return [mean[:, :2], mean[:, 2:]], [logvar[:, :2], logvar[:, 2:]]
    return fn


def test_iwae_with_the_exact_posterior_is_log_px_for_any_k():
  model = _LinearGaussian()
  x = model.sample(jax.random.PRNGKey(6), 50)
  truth = model.log_px(x)
  for k in (1, 7):
    got = likelihood.importance_weighted_log_likelihood(model.log_joint_fn, model.encode_fn(), x,
                                                        jax.random.PRNGKey(7), k, 0.0)
    assert got.shape == (50,)
    np.testing.assert_allclose(got, truth, rtol=0, atol=1e-4)
  # log Z is subtracted as given.
  shifted = likelihood.importance_weighted_log_likelihood(model.log_joint_fn, model.encode_fn(), x,
                                                          jax.random.PRNGKey(7), 1, 0.75)
  np.testing.assert_allclose(shifted, truth - 0.75, rtol=0, atol=1e-4)


def test_iwae_with_a_worse_posterior_is_below_and_tightens_with_k():
  model = _LinearGaussian()
  # Gap ~ c / K, its standard error over B images ~ sqrt(v / (K B)): B = 1,000 and K <= 16 keep the
  # K = 16 gap ~6 standard errors above 0.
  x = model.sample(jax.random.PRNGKey(8), 1000)
  truth = model.log_px(x)
  shift, scale = 0.3, 2.5
  encode = model.encode_fn(shift, scale)
  gaps = {}
  for k in (1, 4, 16):
    est = likelihood.importance_weighted_log_likelihood(model.log_joint_fn, encode, x,
                                                        jax.random.PRNGKey(9 + k), k, 0.0)
    gaps[k] = np.asarray(truth - est, np.float64)
  means = [gaps[k].mean() for k in (1, 4, 16)]
  assert means[0] > means[1] > means[2] > 0, means
  # K = 1: E[log w] = log p(x) - KL(q || p(z|x)); here KL is the same for every x.
  _, var_p = model.posterior(x)
  var_q = scale * var_p
  kl = 0.5 * np.sum(var_q / var_p + shift ** 2 / var_p - 1 - np.log(var_q / var_p))
  assert abs(means[0] - kl) < 4 * gaps[1].std() / np.sqrt(1000)
  assert means[2] < 0.25 * kl


# --------------------------------------------------------------------------------------------------
# The model's functions.


def test_model_functions_agree_with_posterior_log_joint():
  config = tiny_digits_config()
  model = train.create_model(config, steps_per_epoch=10)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  # Random parameters of the init's shapes (compiling the init itself takes ~20 s on 2 cores).
  shapes = jax.eval_shape(lambda k: train.init_variables(model, k, shape), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  params, sn_state, batch_stats = jax.tree_util.tree_map(
      lambda l: jnp.asarray(rng.normal(size=l.shape) / np.sqrt(max(np.prod(l.shape[:-1]), 1)),
                            l.dtype), shapes)
  state = train.state_from_params(model, params, sn_state, batch_stats=batch_stats)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3,) + shape, minval=-1, maxval=1)
  key = jax.random.PRNGKey(2)
  log_f_fn, log_joint_fn, encode_fn = likelihood.model_functions(model, state)
  # K = 1 with the same key: log p~(x, z) of posterior_log_joint's draw minus log q(z|x).
  got = likelihood.importance_weighted_log_likelihood(log_joint_fn, encode_fn, x, key, 1, 0.0)
  means, logvars = encode_fn(x)
  (k,) = jax.random.split(key, 1)
  eps = [np.asarray(jax.random.normal(kl, m.shape))
         for kl, m in zip(jax.random.split(k, len(means)), means)]
  log_q = sum(np.sum(-0.5 * e ** 2 - 0.5 * np.asarray(lv) - 0.5 * np.log(2 * np.pi), axis=1)
              for e, lv in zip(eps, logvars))
  expected = np.asarray(log_joint.posterior_log_joint(model, state, x, key, 1)[0]) - log_q
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  z = jnp.zeros((4, model.latent_dim))
  f = log_f_fn(z)
  assert f.shape == (4,) and np.isfinite(np.asarray(f)).all()


# --------------------------------------------------------------------------------------------------
# Bits per dimension.


def test_bits_per_dim_known_answers():
  d = 3 * 32 * 32
  np.testing.assert_allclose(likelihood.bits_per_dim(-3 * d * math.log(2), d), 3.0, rtol=1e-6)
  # The uniform density on [-1, 1]^D: 1 bit/dim as a density, 8 bits/dim as 256-level data.
  uniform = jnp.full((4,), -d * math.log(2))
  np.testing.assert_allclose(likelihood.bits_per_dim(uniform, d), np.ones(4), rtol=1e-6)
  np.testing.assert_allclose(likelihood.bits_per_dim(uniform, d, data_range=2.0), np.full(4, 8.0),
                             rtol=1e-6)
  # In general the correction on [-1, 1] with 256 levels is +7 bits/dim.
  np.testing.assert_allclose(likelihood.bits_per_dim(-1234.5, 10, data_range=2.0),
                             likelihood.bits_per_dim(-1234.5, 10) + 7, rtol=1e-6)
  np.testing.assert_allclose(likelihood.bits_per_dim(0.0, 5, data_range=1.0, num_levels=2), 1.0)


# --------------------------------------------------------------------------------------------------
# Argument errors.


@pytest.mark.parametrize("call, match", [
    (lambda: likelihood.log_normalizer_is(_zero_f, jax.random.PRNGKey(0), 2, 0), "num_samples"),
    (lambda: likelihood.log_normalizer_is(_zero_f, jax.random.PRNGKey(0), 2, 5, batch_size=0),
     "batch_size"),
    (lambda: likelihood.log_normalizer_is(_zero_f, jax.random.PRNGKey(0), 0, 5), "latent_dim"),
    (lambda: likelihood.log_normalizer_ais(_zero_f, jax.random.PRNGKey(0), 2, 4, 1, step_size=.1),
     "num_temps"),
    (lambda: likelihood.log_normalizer_ais(_zero_f, jax.random.PRNGKey(0), 2, 0, 3, step_size=.1),
     "num_chains"),
    (lambda: likelihood.log_normalizer_ais(_zero_f, jax.random.PRNGKey(0), 2, 4, 3, step_size=.1,
                                           n_mala_steps=0), "n_mala_steps"),
    (lambda: likelihood.log_normalizer_ais(_zero_f, jax.random.PRNGKey(0), 2, 4, 3, step_size=0.0),
     "step_size"),
    (lambda: likelihood.log_normalizer_ais(_zero_f, jax.random.PRNGKey(0), 2, 4, 3, step_size=.1,
                                           schedule="cosine"), "Unknown schedule"),
    (lambda: likelihood.importance_weighted_log_likelihood(
        None, None, jnp.zeros((2, 3)), jax.random.PRNGKey(0), 0, 0.0), "num_samples"),
    (lambda: likelihood.bits_per_dim(-1.0, 0), "num_dims"),
    (lambda: likelihood.bits_per_dim(-1.0, 3, data_range=0.0), "data_range"),
    (lambda: likelihood.bits_per_dim(-1.0, 3, data_range=2.0, num_levels=1), "num_levels"),
])
def test_argument_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()
